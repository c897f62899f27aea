"""JupyterLab opens the notebooks: a real `jupyter lab` on 127.0.0.1 lists the six through its REST API."""

import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

from wdlib import config


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyter_lab_lists_the_notebooks(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={config.REPO_ROOT / 'notebooks'}",
           "--ServerApp.port_retries=0", "--allow-root"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path,
                            env={**__import__("os").environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)})
    try:
        url = f"http://127.0.0.1:{port}/api/contents/?token={token}"
        deadline, listing = time.time() + 90, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    listing = json.load(r)
                break
            except OSError:
                time.sleep(0.5)
        assert listing is not None, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no answer"
        names = sorted(c["name"] for c in listing["content"] if c["type"] == "notebook")
        assert names == ["01_data_synthesis.ipynb", "02_trajectory_analysis.ipynb", "03_sft.ipynb",
                         "04_dapo.ipynb", "05_evaluation.ipynb", "06_report.ipynb"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

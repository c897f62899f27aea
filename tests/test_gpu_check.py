"""scripts/gpu_check.sh: the GPU check's dry run on CPU (the same code as on the GPU, fp32), so the script is known to
work before a GPU is at hand; on a machine without CUDA the GPU mode refuses at once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from wdlib import config

SCRIPT = config.REPO_ROOT / "scripts" / "gpu_check.sh"


def test_script_is_valid_bash_and_gpu_mode_needs_cuda():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    import importlib

    runner = importlib.import_module("wdlib.gpu_check.__main__")
    with pytest.raises(SystemExit, match="no CUDA GPU visible"):
        runner.run("cuda")


@pytest.mark.slow
def test_cpu_dry_run_trains_sft_and_dapo_two_steps_each():
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    r = subprocess.run([str(SCRIPT), "--cpu"], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "CPU DRY RUN PASSED" in r.stdout
    report = json.loads(re.search(r"\[gpu_check\] (\{.*?\n\})", r.stdout, re.S).group(1))
    assert report["sft"]["steps"] == 2 and len(report["sft"]["losses"]) == 2
    assert report["dapo"]["steps"] == 2 and report["dapo"]["kept_groups"] > 0  # a real, informative DAPO step
    moved, total = map(int, report["dapo"]["tensors_moved"].split("/"))
    assert moved > 0 and total > 0 and report["weights"] == "torch.float32 on cpu"
    assert set(report["timings_s"]) == {"model", "sft (2 steps)", "dapo (2 steps)"}
    print(r.stdout[r.stdout.index("[gpu_check] total"):])

"""The papermill pipeline: order, subset, resume, stop at the first failure; every notebook runs on ci params."""

import json
import subprocess
import sys

import nbformat
import pytest
from chromium import check_page

from wdlib import config, params, pipeline


def _notebook(path, code):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("params_file = None\nrun = {}")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def tmp_params(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(f"extends: {config.PARAMS_DIR / 'ci.yaml'}\nrun: {{name: t, output_dir: {tmp_path / 'out'}}}\n")
    return p


def test_stops_at_first_failure_and_resumes(tmp_path, tmp_params, monkeypatch):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    trace = tmp_path / "trace.txt"
    _notebook(nbdir / "01_a.ipynb", f"open({str(trace)!r}, 'a').write('a')")
    _notebook(nbdir / "02_b.ipynb", "raise ValueError('boom in stage b')")
    _notebook(nbdir / "03_c.ipynb", f"open({str(trace)!r}, 'a').write('c')")
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", nbdir)

    with pytest.raises(pipeline.StageFailed, match="02_b.ipynb failed in cell .*ValueError: boom in stage b"):
        pipeline.run(tmp_params)
    assert trace.read_text() == "a"  # 03 never ran
    out = tmp_path / "out" / "t" / "notebooks"
    assert (out / "01_a.done").is_file() and not (out / "02_b.done").exists()
    assert "boom in stage b" in (out / "02_b.ipynb").read_text()  # the executed copy shows the error

    _notebook(nbdir / "02_b.ipynb", "pass")  # fix the stage, resume: 01 is skipped
    pipeline.run(tmp_params, resume=True)
    assert trace.read_text() == "ac"
    pipeline.run(tmp_params, only="03")
    assert trace.read_text() == "acc"
    with pytest.raises(SystemExit, match="no notebook"):
        pipeline.run(tmp_params, only="07")


def test_cell_output_and_progress_bars_stream_to_the_terminal(tmp_path, tmp_params, monkeypatch, capsys):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _notebook(nbdir / "01_a.ipynb", "from tqdm.auto import tqdm\nfor _ in tqdm(range(5), desc='rollouts', mininterval=0):\n"
                                    "    pass\nprint('stage a says hello')")
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", nbdir)
    pipeline.run(tmp_params, stream_output=True)
    terminal = capsys.readouterr()
    assert "stage a says hello" in terminal.out
    assert "rollouts: 100%" in terminal.err and "5/5" in terminal.err and "\r" in terminal.err  # a bar, in place
    pipeline.run(tmp_params)  # the library default (tests, notebooks calling run): the pipeline's own lines only
    assert "stage a says hello" not in capsys.readouterr().out


def test_cli_reports_bad_params_without_starting_kernels(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dapo: {epsilon_hihg: 1}\n")
    r = subprocess.run([sys.executable, "-m", "wdlib.pipeline", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "dapo.epsilon_hihg: unknown key" in r.stderr


def test_papermill_cli_from_inside_notebooks_dir(tmp_path):
    """The literal `papermill 04_dapo.ipynb out.ipynb -f params/7b.yaml` from notebooks/ resolves the YAML."""
    out = tmp_path / "x.ipynb"
    papermill = [sys.executable, "-m", "papermill"]
    r = subprocess.run(papermill + ["04_dapo.ipynb", str(out), "-f", "params/7b.yaml", "--prepare-only"],
                       cwd=config.REPO_ROOT / "notebooks", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    injected = [c for c in nbformat.read(out, 4).cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "Qwen/Qwen2.5-7B-Instruct" in injected[0].source


@pytest.mark.slow
@pytest.mark.timeout(1800)  # six notebooks: 01, 03 and 04 alone took 845 s on 2 shared CPU cores (2026-12-02)
def test_every_notebook_runs_on_ci_params(tmp_params, tmp_path):
    executed = pipeline.run(tmp_params)
    assert [p.name for p in executed] == [nb.name for nb in pipeline.notebooks()] and len(executed) == 6
    for p in executed:
        nb = nbformat.read(p, 4)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, (p.name, errors)
        assert json.loads(p.with_suffix(".done").read_text())["seconds"] >= 0
    # 06's report, written by the embedded model, renders in headless Chromium with every [n] linked to its reference
    pages = sorted((tmp_path / "out" / "t" / "reports").glob("*/report.html"))
    assert len(pages) == len(params.load(tmp_params).report.topics)
    for page in pages:
        found = check_page(page, tmp_path / "chromium")
        assert found["title"] and found["bad"] == [] and found["unlinked"] == []

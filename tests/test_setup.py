"""Repo hygiene that CI must keep: pins agree, notebooks carry no outputs, no secrets in params."""

import json
import re
import tomllib

import yaml

from wdlib import config

ROOT = config.REPO_ROOT


def _pins(reqs):
    out = {}
    for r in reqs:
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*([=<>!~].*)?$", r.strip())
        if m and not r.startswith("-"):
            out[m.group(1).lower().replace("_", "-")] = (m.group(2) or "").replace(" ", "")
    return out


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _pins(project["dependencies"] + project["optional-dependencies"]["gpu"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(line.startswith("-e .[gpu") for line in pip_section)
    listed = _pins(pip_section)
    assert listed, "environment.yml pins nothing"
    for name, spec in listed.items():
        assert declared.get(name) == spec, f"environment.yml {name}{spec} != pyproject {name}{declared.get(name)}"
    for core in ["torch", "transformers", "trl", "vllm", "unsloth", "datasets"]:
        assert core in listed


def test_notebooks_committed_without_outputs_and_with_parameters_cell():
    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.stem[:2] for p in nbs] == ["01", "02", "03", "04", "05", "06"]
    for p in nbs:
        nb = json.loads(p.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert "parameters" in code[0]["metadata"].get("tags", []), p.name
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{p.name} has outputs"


def test_params_hold_no_secrets():
    for p in (ROOT / "params").rglob("*.yaml"):
        text = p.read_text()
        assert not re.search(r"sk-[A-Za-z0-9]{16,}|api_key\s*:", text), p

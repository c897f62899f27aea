"""Preflight (`python -m wdlib.pipeline PARAMS --check`, `wdlib.preflight`): on a machine without GPUs the paper-scale
params list what is missing (by key, with the fix) and exit non-zero in seconds; the CPU params pass; key values never
appear; no notebook starts a multi-process launch that cannot work."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from wdlib import config, launch, params, pipeline, preflight

GPU_KEYS = {"run.device", "sft.num_processes", "dapo.num_processes", "sft.accelerate_config",
            "dapo.accelerate_config", "models.policy.tensor_parallel_size"}


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "SERPAPI_API_KEY", "HF_TOKEN")}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def test_7b_check_lists_the_problems_and_exits_non_zero_without_leaking_keys():
    secret = "sk-test-0123456789abcdefSECRET"
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "wdlib.pipeline", "params/7b.yaml", "--check"], capture_output=True,
                       text=True, cwd=config.REPO_ROOT, env=_env(OPENAI_API_KEY=secret))
    seconds = time.perf_counter() - start
    print(f"params/7b.yaml --check: exit {r.returncode} in {seconds:.1f} s")
    assert r.returncode == 1 and r.stdout == ""
    out = r.stderr
    assert out.startswith("preflight params/7b.yaml (notebooks 01, 02, 03, 04, 05, 06):")
    for key in GPU_KEYS | {"web.serpapi_key_env", "eval.gaia_path", "models.policy"}:
        assert f"params/7b.yaml: {key}:" in out, key
    assert "8 processes need 8 CUDA GPUs, this machine has 0" in out and "DeepSpeed, which is not installed" in out
    assert "SERPAPI_API_KEY, which is not set" in out and "HF_TOKEN is not set" in out
    assert "OPENAI_API_KEY" not in out and secret not in out  # set: not a problem, and its value never printed
    assert out.count("fix: ") == out.count("problem: ")


@pytest.mark.parametrize("name", ["smoke", "ci"])
def test_cpu_params_pass_their_check(name):
    r = subprocess.run([sys.executable, "-m", "wdlib.pipeline", f"params/{name}.yaml", "--check"],
                       capture_output=True, text=True, cwd=config.REPO_ROOT, env=_env())
    assert r.returncode == 0 and "ready" in r.stdout, r.stdout + r.stderr


def test_check_follows_the_selected_notebooks_and_the_machine():
    cfg = params.load("params/7b.yaml")
    env = {"OPENAI_API_KEY": "x", "SERPAPI_API_KEY": "x", "HF_TOKEN": "x", "HF_HUB_OFFLINE": "1"}
    keys = {p.key for p in preflight.check(cfg, ["05"], env=env, gpus=8)}
    assert not keys & {"sft.num_processes", "dapo.num_processes", "run.output_dir"}  # evaluation trains nothing
    assert "eval.gaia_path" not in keys and "models.policy" in keys  # HF_TOKEN set; the 7B is not cached here
    with_gpus = {p.key for p in preflight.check(cfg, ["03"], env=env, gpus=8)}
    assert "sft.num_processes" not in with_gpus and "sft.accelerate_config" in with_gpus  # deepspeed still missing
    assert {p.key for p in preflight.check(cfg, ["03"], env=env, gpus=4)} >= {"sft.num_processes"}
    cfg.models.policy.name = "embedded:smollm2-135m"
    cfg.sft.num_processes, cfg.run.device = 1, "cpu"
    assert preflight.check(cfg, ["03"], env=env, gpus=0) == []


def test_model_and_judge_checks():
    cfg = params.load("params/ci.yaml")
    cfg.eval.judge = {"local": "equivalence"}  # an LLM judge without a judge model
    assert [p.key for p in preflight.check(cfg, ["05"], env={})] == ["models.judge"]
    cfg.models.judge = config.ModelSpec(name="judge", backend="openai", base_url=None, api_key_env="JUDGE_KEY")
    assert {p.key for p in preflight.check(cfg, ["05"], env={})} == {"models.judge.base_url",
                                                                     "models.judge.api_key_env"}
    cfg.models.policy.name = "./no/such/checkpoint"
    problems = preflight.check(cfg, ["05"], env={"JUDGE_KEY": "k"})
    assert any(p.key == "models.policy" and "not a model folder" in p.message for p in problems)
    assert preflight.parameter_count("Qwen/Qwen2.5-7B-Instruct") == 7e9
    assert preflight.parameter_count("Qwen/QwQ-32B") == 32e9 and preflight.parameter_count("gpt-4o") is None


def test_report_notebook_checks_its_models_and_checkpoints(tmp_path):
    cfg = params.load("params/ci.yaml")
    cfg.run.output_dir = str(tmp_path)  # no checkpoints there
    assert preflight.check(cfg, ["06"], env={}) == []  # report.model: latest falls back to the embedded policy
    cfg.report.model = "sft"
    assert [p.key for p in preflight.check(cfg, ["06"], env={})] == ["report.model"]
    assert preflight.check(cfg, ["03", "06"], env={}) == []  # notebook 03 writes the checkpoint first
    cfg.report.model, cfg.report.citation_check = "latest", "llm"  # the LLM citation check without a judge model
    assert [p.key for p in preflight.check(cfg, ["06"], env={})] == ["models.judge"]
    assert "models.judge" not in {p.key for p in preflight.check(cfg, ["05"], env={})}  # only 06 asks for it
    cfg.report.citation_check = "lexical"
    cfg.report.writer = config.ModelSpec(name="w", backend="openai", base_url=None, api_key_env="WRITER_KEY")
    assert {p.key for p in preflight.check(cfg, ["06"], env={})} == {"report.writer.base_url",
                                                                     "report.writer.api_key_env"}
    cfg.report.writer, cfg.report.model = None, "./no/such/model"
    assert [p.key for p in preflight.check(cfg, ["06"], env={})] == ["report.model"]


def test_disk_estimate_counts_final_models_and_trainer_checkpoints():
    cfg = params.load("params/7b.yaml")
    needed, how = preflight.checkpoint_bytes(cfg, {"03", "04"})
    # bf16: final 2 B/param; trainer checkpoint 16 B/param; SFT and DAPO keep 2 each
    assert needed == pytest.approx(2 * 7e9 * (2 + 2 * 16)) and "2 trainer checkpoint(s)" in how
    cfg.dapo.save_total_limit = None  # DAPO then keeps every save: 200 steps / 50
    assert preflight.checkpoint_bytes(cfg, {"04"})[0] == pytest.approx(7e9 * (2 + 4 * 16))
    assert preflight.checkpoint_bytes(cfg, {"05"})[0] == 0


def test_no_multi_process_launch_that_cannot_work(tmp_path):
    cfg = params.load("params/7b.yaml")
    cfg.run.output_dir = str(tmp_path)
    with pytest.raises(RuntimeError, match=r"not launching dapo \(8 processes\)[\s\S]*dapo.num_processes"):
        launch.launch(cfg, "dapo")
    assert not cfg.paths.launch_params("dapo").exists()  # nothing was written, nothing started


def test_pipeline_runs_the_preflight_before_any_notebook(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(f"extends: {config.PARAMS_DIR / '7b.yaml'}\nrun: {{name: t, output_dir: {tmp_path / 'out'}}}\n")
    with pytest.raises(pipeline.StageFailed, match="preflight found problems; nothing was run"):
        pipeline.run(p, only="05")
    assert not (tmp_path / "out" / "t" / "notebooks").exists() or not any((tmp_path / "out" / "t" / "notebooks")
                                                                           .glob("*.ipynb"))


@pytest.mark.slow
def test_papermill_dapo_notebook_on_7b_params_stops_before_launching(tmp_path):
    """The reported failure: `papermill notebooks/04_dapo.ipynb out.ipynb -f params/7b.yaml` on a CPU box started 8
    accelerate processes that died on DeepSpeed. Now the notebook stops at once, saying what is missing."""
    p = tmp_path / "p.yaml"
    p.write_text(f"extends: {config.PARAMS_DIR / '7b.yaml'}\nrun: {{name: t, output_dir: {tmp_path / 'out'}}}\n")
    out = tmp_path / "out.ipynb"
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "papermill", "notebooks/04_dapo.ipynb", str(out), "-f", str(p)],
                       capture_output=True, text=True, cwd=config.REPO_ROOT, env=_env())
    print(f"notebook 04 on 7b params stopped after {time.perf_counter() - start:.1f} s")
    assert r.returncode != 0
    assert "not launching dapo (8 processes)" in out.read_text() and "DeepSpeed" in out.read_text()
    assert not (tmp_path / "out" / "t" / "dapo_params.yaml").exists()

"""Params schema: every shipped YAML loads; bad files fail naming file and key path."""

import pytest

from wdlib import config, params


@pytest.mark.parametrize("name", ["smoke", "ci", "7b", "32b", "qwq32b"])
def test_shipped_params_load(name):
    cfg = params.load(f"params/{name}.yaml")
    assert cfg.run.name == name
    assert cfg.run_dir == config.REPO_ROOT / "outputs" / name


def test_gpu_params_share_one_base_and_keep_paper_settings():
    for name in ["7b", "32b", "qwq32b"]:
        cfg = params.load(f"params/{name}.yaml")
        assert (cfg.dapo.num_generations, cfg.dapo.epsilon, cfg.dapo.epsilon_high, cfg.dapo.beta) == (16, 0.2, 0.28, 0.0)
        assert (cfg.eval.runs, cfg.eval.temperature, cfg.eval.top_p) == (3, 0.6, 0.95)
        assert cfg.models.teacher.api_key_env and "sk-" not in str(cfg.dump())
        # the paper's evaluation protocol and the funnel's LLM quality review
        assert cfg.eval.judge == {"gaia": "equivalence", "webwalkerqa": "equivalence"} and cfg.models.judge
        assert cfg.filters.llm_quality_check and cfg.agent.prompt == "ours"
    assert params.load("params/qwq32b.yaml").trajectories.cot == "long"
    assert params.load("params/7b.yaml").trajectories.cot == "short"


def test_run_paths_name_every_file_of_the_run_folder_once():
    paths = params.load("params/ci.yaml").paths
    files = [v for v in vars(paths).values()] + [paths.checkpoint_dir(s) for s in ("sft", "dapo")] + \
        [paths.trainer_dir(s) for s in ("sft", "dapo")] + [paths.summary_path(s) for s in ("sft", "dapo")] + \
        [paths.launch_params(s) for s in ("sft", "dapo")] + [paths.eval_run("local", "base", 0)]
    assert all(f == paths.root or paths.root in f.parents for f in files)
    assert len(set(files)) == len(files)  # no two names for one file
    assert paths.root == config.REPO_ROOT / "outputs" / "ci" and paths.qa.name == "qa.jsonl"
    assert paths.eval_run("gaia", "sft", 2) == paths.root / "eval" / "gaia" / "sft" / "run2.jsonl"


def _write(tmp_path, text, name="bad.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_unknown_key_names_file_and_key_path(tmp_path):
    p = _write(tmp_path, "extends: 7b.yaml\ndapo:\n  epsilon_hihg: 0.3\n")
    with pytest.raises(config.ParamsError) as e:
        params.load(p)
    assert str(e.value) == f"{p}: dapo.epsilon_hihg: unknown key"


def test_unknown_section_and_nested_model_key(tmp_path):
    with pytest.raises(config.ParamsError, match=r"bad.yaml: trainer: unknown key"):
        params.load(_write(tmp_path, "trainer: {lr: 1}\n"))
    with pytest.raises(config.ParamsError, match=r"bad.yaml: models.policy.nmae: unknown key"):
        params.load(_write(tmp_path, "models: {policy: {nmae: x}}\n"))


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(config.ParamsError) as e:
        params.load(_write(tmp_path, "sft: {learning_rate: fast}\n"))
    msg = str(e.value)
    assert "bad.yaml: sft.learning_rate:" in msg and "'fast'" in msg
    with pytest.raises(config.ParamsError, match=r"web.mode: Input should be 'local', 'live' or 'replay'"):
        params.load(_write(tmp_path, "web: {mode: internet}\n"))


def test_missing_files(tmp_path):
    with pytest.raises(config.ParamsError, match=r"nope.yaml: params file not found"):
        params.load(tmp_path / "nope.yaml")
    with pytest.raises(config.ParamsError, match=r"bad.yaml: extends: params file not found: gone.yaml"):
        params.load(_write(tmp_path, "extends: gone.yaml\n"))
    with pytest.raises(config.ParamsError, match=r"top level must be a mapping"):
        params.load(_write(tmp_path, "- a\n- b\n"))


def test_extends_merges_deeply(tmp_path):
    _write(tmp_path, "dapo: {epsilon: 0.1, num_generations: 4}\nrun: {name: base}\n", "base.yaml")
    cfg = params.load(_write(tmp_path, "extends: base.yaml\ndapo: {num_generations: 8}\n", "child.yaml"))
    assert (cfg.dapo.epsilon, cfg.dapo.num_generations, cfg.run.name) == (0.1, 8, "base")


def test_notebook_parameters_roundtrip():
    """What papermill injects from -f params/7b.yaml gives the same config as loading the file."""
    import yaml

    data = yaml.safe_load((config.PARAMS_DIR / "7b.yaml").read_text())
    nb_cfg = params.from_namespace(data)
    assert nb_cfg.dump() == params.load("params/7b.yaml").dump()
    assert params.from_namespace({}).run.name == "smoke"  # JupyterLab with no parameters: smoke
    with pytest.raises(config.ParamsError, match="dapo.epsilon_hihg: unknown key"):
        params.from_namespace({"dapo": {"epsilon_hihg": 1}})

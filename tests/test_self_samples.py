"""The rejection round from the SFT policy (`wdlib.synthesis.self_samples`) and the second SFT pass on its kept
samples (`wdlib.sft.train_second_pass`): the embedded model stands in for the first pass's checkpoint and answers
questions on the local web for real; the second pass trains for real and writes its own checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from wdlib import models, params, sft, synthesis
from wdlib.tools import Toolbox
from wdlib.trajectory import QAPair, Trajectory, load_trajectories, write_jsonl

MODEL = "embedded:smollm2-135m"


@pytest.fixture
def cfg(tmp_path):
    data = params.load("params/ci.yaml").dump()
    data["run"].update(output_dir=str(tmp_path), name="rs", device="cpu")
    data["sft"].update(include_external=False, rejection={"samples_per_question": 2, "max_questions": 2})
    data["models"]["policy"]["max_new_tokens"] = 24
    cfg = params.from_dict(data)
    cfg.run_dir.mkdir(parents=True)
    # the first pass's checkpoint: the embedded model itself (nothing here depends on what SFT taught it)
    (cfg.run_dir / "checkpoints").mkdir()
    cfg.paths.checkpoint_dir("sft").symlink_to(models.resolve(MODEL), target_is_directory=True)
    write_jsonl(cfg.paths.qa, [QAPair(question="Which module parses JSON?", answer="json"),
                               QAPair(question="What does the sqlite3 module provide?", answer="DB-API"),
                               QAPair(question="Not sampled: past max_questions", answer="x")])
    return cfg


def test_policy_samples_go_through_the_funnel_and_resume(cfg):
    torch.set_num_threads(2)
    with Toolbox.from_config(cfg) as toolbox:
        samples, counts = synthesis.sample_policy(cfg, toolbox, progress=False)
        on_disk = load_trajectories(cfg.paths.policy_trajectories)
        assert len(samples) == len(on_disk) and 2 <= len(on_disk) <= 4  # 2 questions, up to 2 samples each
        assert {t.question for t in on_disk} <= {"Which module parses JSON?", "What does the sqlite3 module provide?"}
        assert all(t.model == str(cfg.paths.checkpoint_dir("sft")) and "kept" in t.filters for t in on_disk)
        assert all(t.sampling.get("temperature") == cfg.sft.rejection.temperature for t in on_disk)
        kept = load_trajectories(cfg.paths.policy_data)
        assert [t.id for t in kept] == [t.id for t in on_disk if t.filters["kept"]]
        assert json.loads(cfg.paths.policy_funnel.read_text()) == counts
        assert counts["input"] == len(on_disk) and counts["kept"] == len(kept) and counts["questions"] == 2
        # a question stops at its first kept sample; one without gets every sample
        for question in {t.qa_id for t in on_disk}:
            tries = [t for t in on_disk if t.qa_id == question]
            assert len(tries) == 2 or tries[-1].filters["kept"]
        again, _ = synthesis.sample_policy(cfg, toolbox, progress=False)  # resumed: nothing sampled twice
    assert sorted(t.id for t in again) == sorted(t.id for t in on_disk)
    assert len(load_trajectories(cfg.paths.policy_trajectories)) == len(on_disk)


def test_no_round_without_samples_or_checkpoint(cfg):
    cfg.sft.rejection.samples_per_question = 0
    with pytest.raises(ValueError, match="samples_per_question is 0"):
        synthesis.sample_policy(cfg, toolbox=None)
    cfg.sft.rejection.samples_per_question = 1
    cfg.paths.checkpoint_dir("sft").unlink()
    with pytest.raises(FileNotFoundError, match="first SFT pass"):
        synthesis.sample_policy(cfg, toolbox=None)


def _episode(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "s"}, {"role": "user", "content": question},
            {"role": "assistant", "content": "<think>Search.</think>\n<tool_call>\n{\"name\": \"search\", "
                                             f"\"arguments\": {{\"query\": [\"{question}\"]}}}}\n</tool_call>"},
            {"role": "user", "content": f"<tool_response>\n{answer} is the answer.\n</tool_response>"},
            {"role": "assistant", "content": f"<think>The result says {answer}.</think>\n<answer>{answer}</answer>"}]


def test_second_pass_trains_on_teacher_and_policy_samples_into_its_own_checkpoint(cfg):
    torch.set_num_threads(2)
    write_jsonl(cfg.paths.sft_data, [Trajectory(question="q1", messages=_episode("q1", "json"), source="graded")])
    write_jsonl(cfg.paths.policy_data, [Trajectory(question="q2", messages=_episode("q2", "DB-API"),
                                                   filters={"kept": True}),
                                        Trajectory(question="q3", messages=_episode("q3", "x"),
                                                   filters={"kept": False})])
    cfg.sft.max_steps, cfg.sft.max_examples, cfg.sft.rejection.max_steps = 16, None, 1  # its own step count
    second = sft.second_pass_config(cfg)
    assert (second.sft.checkpoint, second.sft.init, second.sft.max_steps) == (
        "sft-rs", str(cfg.paths.checkpoint_dir("sft")), 1)
    convs, stats = sft.load_conversations(second)
    assert stats["sources"] == {"run": 1, "sft_policy": 1} and stats["skipped"] == {"filtered_out": 1}
    assert not sft.load_conversations(cfg)[1]["sources"].get("sft_policy")  # the first pass never reads them

    result = sft.train_second_pass(cfg)
    final = cfg.paths.checkpoint_dir("sft-rs")
    assert result.checkpoint == final and (final / "config.json").is_file()
    assert (cfg.paths.trainer_dir("sft-rs") / "checkpoint-1").is_dir()
    assert json.loads(cfg.paths.summary_path("sft-rs").read_text())["data"]["sources"]["sources"]["sft_policy"] == 1
    assert not cfg.paths.summary_path("sft").exists()  # the first pass's files are left alone
    trained = models.load_model(str(final), device="cpu").state_dict()
    first = models.load_model(str(cfg.paths.checkpoint_dir("sft")), device="cpu").state_dict()
    assert any(not torch.equal(first[k], trained[k]) for k in first)

    # later stages find it by name: evaluation's label sft-rs, DAPO's init
    from wdlib.dapo import init_model_path
    from wdlib.evaluate.run import eval_models

    cfg.eval.checkpoints = ["base", "sft", "sft-rs"]
    found, skipped = eval_models(cfg)
    assert found["sft-rs"].name == str(final) and not skipped
    cfg.dapo.init = "sft-rs"
    assert init_model_path(cfg) == str(final)

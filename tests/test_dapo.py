"""DAPO stage: the CPU log-prob fallback, rollout assembly (env_mask), overlong shaping, dynamic sampling on a real
GRPOTrainer, a malformed tool call mid-rollout, and one real DAPO step with the embedded model on the local web."""

from __future__ import annotations

import asyncio
import json
import math

import pandas as pd
import pytest
import torch

from wdlib import models
from wdlib.trl_compat import TorchChunkedLogProb, install

torch.set_num_threads(2)
MODEL = "embedded:smollm2-135m"


# ------------------------------------------------------------------ the TRL 1.15 CPU shim
def _reference(hidden, weight, bias, targets, temperature, softcap, scale):
    z = (hidden @ weight.T + bias) * scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    z = z / temperature
    logp = torch.log_softmax(z, dim=-1)
    chosen = logp.gather(-1, targets[:, None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return chosen, entropy, torch.logsumexp(2 * logp, -1), z.mean(-1), z.argmax(-1) == targets


@pytest.mark.parametrize("softcap,scale,temperature", [(None, 1.0, 1.0), (30.0, 0.5, 0.7)])
def test_torch_logprob_fallback_matches_reference(softcap, scale, temperature, monkeypatch):
    monkeypatch.setattr("wdlib.trl_compat._LOGITS_PER_CHUNK", 7 * 300)  # several token chunks
    g = torch.Generator().manual_seed(0)
    N, H, V = 40, 16, 300
    leaves = [torch.randn(N, H, generator=g, requires_grad=True), torch.randn(V, H, generator=g, requires_grad=True),
              torch.randn(V, generator=g, requires_grad=True)]
    targets = torch.randint(0, V, (N,), generator=g)
    outputs = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
    ours = TorchChunkedLogProb.apply(*leaves, targets, temperature, 4096, softcap, scale, outputs)
    ref_leaves = [x.detach().clone().requires_grad_(True) for x in leaves]
    ref = _reference(*ref_leaves, targets, temperature, softcap, scale)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        if a.dtype == torch.bool:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # same gradients through log-probs and entropy (TRL differentiates both)
    w = torch.randn(N, generator=g)
    ((ours[0] * w).sum() + 0.3 * ours[1].sum()).backward()
    ((ref[0] * w).sum() + 0.3 * ref[1].sum()).backward()
    for a, b in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
    # outputs not asked for are None
    only = TorchChunkedLogProb.apply(*leaves, targets, temperature, 4096, softcap, scale, ("log_probs",))
    assert only[0].shape == (N,) and all(x is None for x in only[1:])


def test_torch_logprob_fallback_all_masked_stays_differentiable():
    hidden = torch.randn(3, 8, requires_grad=True)
    weight = torch.randn(20, 8, requires_grad=True)
    logprobs, entropy, *_ = TorchChunkedLogProb.apply(hidden[:0], weight, None, torch.zeros(0, dtype=torch.long),
                                                      1.0, 4096, None, 1.0, ("log_probs", "entropy"))
    assert logprobs.shape == (0,) and entropy.shape == (0,)
    (logprobs.sum() + entropy.sum()).backward()  # an all-masked micro-batch contributes a zero gradient
    assert torch.count_nonzero(weight.grad) == 0


def test_install_only_when_triton_kernel_missing():
    from trl.trainer import utils as trl_utils

    install()
    assert trl_utils._ChunkedLogProbFunction is not None
    before = trl_utils._ChunkedLogProbFunction
    assert install() is False and trl_utils._ChunkedLogProbFunction is before  # never replaces a real kernel


# ------------------------------------------------------------------ overlong shaping
def test_overlong_penalty_counts_model_tokens_only():
    from wdlib.dapo import overlong_penalty

    limit, buffer = 100, 20
    short_with_long_observations = [1] * 50 + [0] * 500 + [1] * 30  # 80 model tokens: at the buffer's edge
    assert overlong_penalty(short_with_long_observations, limit, buffer) == 0.0
    assert overlong_penalty([1] * 90 + [0] * 1000, limit, buffer) == pytest.approx(-0.5)
    assert overlong_penalty([1] * 100, limit, buffer) == pytest.approx(-1.0)
    assert overlong_penalty([1] * 101 + [0] * 5, limit, buffer) == -1.0
    assert overlong_penalty([0] * 10_000, limit, buffer) == 0.0
    # TRL's own soft punishment counts every completion token, observations included
    from trl.rewards import get_soft_overlong_punishment

    trl_penalty = get_soft_overlong_punishment(limit, buffer)
    assert trl_penalty(completion_ids=[short_with_long_observations])[0] == -1.0


# ------------------------------------------------------------------ dynamic sampling on a real GRPOTrainer
def _tiny_trainer(tmp_path, rows, rollout_func, reward_funcs, *, max_refills=2, G=2, per_device=4,
                  accuracy_reward=None, oversample_groups=0):
    from datasets import Dataset
    from trl import GRPOConfig

    from wdlib.dapo import DAPOTrainer

    install()
    path = models.resolve(MODEL)
    args = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], num_generations=G,
                      per_device_train_batch_size=per_device, max_completion_length=32, loss_type="dapo", beta=0.0,
                      max_steps=1, logging_steps=1, save_strategy="no", learning_rate=1e-5, disable_dropout=True)
    trainer = DAPOTrainer(model=path, processing_class=models.load_tokenizer(path), reward_funcs=reward_funcs,
                          args=args, train_dataset=Dataset.from_list(rows), rollout_func=rollout_func,
                          max_refills=max_refills, accuracy_reward=accuracy_reward,
                          oversample_groups=oversample_groups)
    trainer.model.train()
    return trainer


def _fixed_rollout(calls):
    def rollout(prompts, trainer):
        calls.append([p[-1]["content"] for p in prompts])
        tok = trainer.processing_class
        ids = [tok(f"<answer>{i}</answer><|im_end|>", add_special_tokens=False)["input_ids"] for i in range(len(prompts))]
        return {"prompt_ids": [tok(p[-1]["content"])["input_ids"] for p in prompts], "completion_ids": ids,
                "logprobs": None, "env_mask": [[1] * len(x) for x in ids]}
    return rollout


def _reward_by_kind(prompts, completions, kind, **kwargs):
    # "mixed" questions: rewards alternate inside the group (informative); "flat" ones: all equal (uninformative)
    return [float(i % 2) if k == "mixed" else 0.5 for i, k in enumerate(kind)]


def _rows(kinds):
    return [{"prompt": [{"role": "user", "content": f"q{i} {k}"}], "kind": k} for i, k in enumerate(kinds)]


def test_grpo_config_maps_dapo_params_and_passes_trainer_kwargs(smoke_cfg):
    from wdlib.dapo import grpo_config

    cfg = smoke_cfg.model_copy(deep=True)
    args = grpo_config(cfg)
    assert (args.loss_type, args.epsilon, args.epsilon_high, args.beta) == ("dapo", 0.2, 0.28, 0.0)
    assert args.output_dir == str(cfg.paths.trainer_dir("dapo"))
    assert args.save_total_limit == cfg.dapo.save_total_limit == 2  # each checkpoint holds Adam state: keep few
    cfg.dapo.trainer_kwargs = {"weight_decay": 0.05, "max_grad_norm": 0.5}
    args = grpo_config(cfg)
    assert (args.weight_decay, args.max_grad_norm, args.loss_type) == (0.05, 0.5, "dapo")


def test_dynamic_sampling_drops_flat_group_and_refills(tmp_path):
    calls = []
    rows = _rows(["flat", "mixed", "mixed", "mixed"])
    trainer = _tiny_trainer(tmp_path, rows, _fixed_rollout(calls), [_reward_by_kind])
    inputs = [dict(rows[0]), dict(rows[0]), dict(rows[1]), dict(rows[1])]  # one flat group, one mixed group
    batch = trainer._generate_and_score_completions(inputs)
    metrics = trainer._metrics["train"]
    assert len(calls) >= 2, "a dropped group must trigger a refill"
    assert batch["advantages"].numel() == 4  # back to the full 2 groups, all informative
    assert (batch["advantages"].view(-1, 2).abs().amax(1) > 0).all()
    assert metrics["dapo/dropped_groups"][-1] >= 1 and metrics["dapo/kept_groups"][-1] >= 2
    assert metrics["dapo/refills"][-1] >= 1
    # the refill's prompts came from the dataset, re-padded into one batch; num_items_in_batch is recounted
    assert batch["prompt_ids"].shape[0] == batch["completion_ids"].shape[0] == 4
    mask = batch["completion_mask"] * batch["tool_mask"]
    assert int(batch["num_items_in_batch"]) == int(mask.sum())
    assert "flat" not in " ".join(trainer.processing_class.batch_decode(batch["prompt_ids"], skip_special_tokens=True))


def test_oversampled_groups_go_out_with_the_step_in_one_call(tmp_path):
    calls = []
    rows = _rows(["flat", "mixed", "mixed", "mixed"])
    trainer = _tiny_trainer(tmp_path, rows, _fixed_rollout(calls), [_reward_by_kind], oversample_groups=2)
    inputs = [dict(rows[0]), dict(rows[0]), dict(rows[1]), dict(rows[1])]  # one flat group, one mixed group
    batch = trainer._generate_and_score_completions(inputs)
    # one generation call for 2 + 2 groups; at least one oversampled group is mixed: no refill round
    assert len(calls) == 1 and len(calls[0]) == 8 and trainer._metrics["train"]["dapo/refills"][-1] == 0
    assert batch["advantages"].numel() == 4 and (batch["advantages"].view(-1, 2).abs().amax(1) > 0).all()
    assert int(batch["num_items_in_batch"]) == int((batch["completion_mask"] * batch["tool_mask"]).sum())
    assert sum(trainer._logs["extra"]["trained"]) == 4 and len(trainer._logs["prompt"]) == 8

    calls.clear()  # nothing informative anywhere: the step's own 2 groups, advantages 0, their tokens counted
    flat = _tiny_trainer(tmp_path, _rows(["flat"] * 4), _fixed_rollout(calls), [_reward_by_kind], max_refills=1,
                         oversample_groups=2)
    inputs = [dict(flat.train_dataset[0])] * 2 + [dict(flat.train_dataset[1])] * 2
    batch = flat._generate_and_score_completions(inputs)
    assert [len(c) for c in calls] == [8, 4] and batch["advantages"].numel() == 4
    assert torch.count_nonzero(batch["advantages"]) == 0
    assert int(batch["num_items_in_batch"]) == int((batch["completion_mask"] * batch["tool_mask"]).sum())


def test_completions_log_holds_every_rollout_of_the_step_and_marks_the_trained_ones(tmp_path):
    # TRL's own log keeps only the last generation call (a refill) and shows the advantages of dropped groups too
    calls = []
    rows = _rows(["flat", "mixed", "mixed", "mixed", "flat", "mixed"])
    trainer = _tiny_trainer(tmp_path, rows, _fixed_rollout(calls), [_reward_by_kind], max_refills=3)
    for step in range(2):
        first = len(calls)
        inputs = [dict(rows[0]), dict(rows[0]), dict(rows[1]), dict(rows[1])]
        trainer._generate_and_score_completions(inputs)
        logged = [p[-1]["content"] for p in trainer._logs["prompt"]]
        trained = list(trainer._logs["extra"]["trained"])
        assert logged == [q for call in calls[first:] for q in call], "every rollout of this step, refills included"
        assert len(trained) == len(logged) == len(trainer._logs["advantages"]) == len(trainer._logs["completion"])
        assert sum(trained) == 4  # two groups of two trained on, as in the batch
        assert all("mixed" in q for q, t in zip(logged, trained) if t)
        assert not any(t for q, t in zip(logged, trained) if "flat" in q)


def test_dynamic_sampling_stops_at_its_cap_when_nothing_is_informative(tmp_path):
    calls = []
    rows = _rows(["flat"] * 6)
    trainer = _tiny_trainer(tmp_path, rows, _fixed_rollout(calls), [_reward_by_kind], max_refills=3)
    inputs = [dict(rows[0]), dict(rows[0]), dict(rows[1]), dict(rows[1])]
    batch = trainer._generate_and_score_completions(inputs)
    assert len(calls) == 1 + 3  # the original batch plus exactly max_refills refills, then it gives up
    metrics = trainer._metrics["train"]
    assert metrics["dapo/kept_groups"][-1] == 0 and metrics["dapo/no_informative_group"][-1] == 1.0
    assert batch["advantages"].numel() == 4 and torch.count_nonzero(batch["advantages"]) == 0  # the original batch


def answer_reward(prompts, completions, kind, **kwargs):  # named as wdlib's, which the accuracy rule reads
    return [float(i % 2) if k == "right-and-wrong" else 0.0 for i, k in enumerate(kind)]


def format_reward(prompts, completions, kind, **kwargs):  # "format-only": answers all wrong, format differs
    return [float(i % 2) if k == "format-only" else 1.0 for i, k in enumerate(kind)]


@pytest.mark.parametrize("rule", ["accuracy", "reward"])
def test_dynamic_sampling_by_accuracy_drops_format_only_groups(tmp_path, rule):
    calls = []
    rows = _rows(["format-only", "right-and-wrong", "right-and-wrong", "right-and-wrong"])
    trainer = _tiny_trainer(tmp_path, rows, _fixed_rollout(calls), [format_reward, answer_reward], max_refills=2,
                            accuracy_reward="answer_reward" if rule == "accuracy" else None)
    inputs = [dict(rows[0]), dict(rows[0]), dict(rows[1]), dict(rows[1])]
    batch = trainer._generate_and_score_completions(inputs)
    prompts = " ".join(trainer.processing_class.batch_decode(batch["prompt_ids"], skip_special_tokens=True))
    metrics = trainer._metrics["train"]
    if rule == "accuracy":  # DAPO's rule: all-wrong answers carry no signal, whatever the format reward says
        assert "format-only" not in prompts and len(calls) >= 2 and metrics["dapo/dropped_groups"][-1] >= 1
    else:  # the total reward differs (0.1 format weight, scaled to unit advantages by the group's std)
        assert "format-only" in prompts and len(calls) == 1 and metrics["dapo/dropped_groups"][-1] == 0
    assert batch["advantages"].numel() == 4 and (batch["advantages"].view(-1, 2).abs().amax(1) > 0).all()


def test_dynamic_sampling_with_nothing_informative_trains_on_zero_advantages(tmp_path):
    calls = []
    rows = _rows(["format-only"] * 4)
    trainer = _tiny_trainer(tmp_path, rows, _fixed_rollout(calls), [format_reward, answer_reward], max_refills=1,
                            accuracy_reward="answer_reward")
    inputs = [dict(rows[0]), dict(rows[0]), dict(rows[1]), dict(rows[1])]
    batch = trainer._generate_and_score_completions(inputs)
    assert len(calls) == 2 and trainer._metrics["train"]["dapo/no_informative_group"][-1] == 1.0
    assert batch["advantages"].numel() == 4 and torch.count_nonzero(batch["advantages"]) == 0


def test_accuracy_reward_must_name_a_reward_function(tmp_path):
    with pytest.raises(ValueError, match="not one of the reward functions"):
        _tiny_trainer(tmp_path, _rows(["flat"] * 2), _fixed_rollout([]), [_reward_by_kind],
                      accuracy_reward="answer_reward")


def test_merge_batches_repads_left_and_right():
    from wdlib.dapo import merge_batches

    a = {"prompt_ids": torch.tensor([[5, 6]]), "prompt_mask": torch.tensor([[1, 1]]),
         "completion_ids": torch.tensor([[7, 8, 9]]), "completion_mask": torch.tensor([[1, 1, 1]]),
         "advantages": torch.tensor([1.0]), "num_items_in_batch": torch.tensor(3), "old_per_token_logps": None}
    b = {"prompt_ids": torch.tensor([[4, 5, 6]]), "prompt_mask": torch.tensor([[1, 1, 1]]),
         "completion_ids": torch.tensor([[7]]), "completion_mask": torch.tensor([[1]]),
         "advantages": torch.tensor([-1.0]), "num_items_in_batch": torch.tensor(1), "old_per_token_logps": None}
    m = merge_batches([a, b], pad_token_id=0)
    assert m["prompt_ids"].tolist() == [[0, 5, 6], [4, 5, 6]] and m["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert m["completion_ids"].tolist() == [[7, 8, 9], [7, 0, 0]]
    assert m["completion_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert m["advantages"].tolist() == [1.0, -1.0] and m["old_per_token_logps"] is None


# ------------------------------------------------------------------ rollouts: token transcripts → TRL's rollout dict
class ScriptedPolicy:
    """A token-level client that replays fixed assistant turns through the real tokenizer. A real model cannot be
    made to emit a given malformed call on demand; this tests what the rollout assembles, not what a model writes."""

    token_level = True
    model_name = "scripted"

    def __init__(self, tokenizer, turns: list[str]):
        self.tokenizer, self.turns = tokenizer, turns

    def encode_prompt(self, messages):
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                       return_dict=False))

    async def generate(self, prompt_ids, **sampling):
        from wdlib.llm import Reply

        await asyncio.sleep(0)
        k = self.tokenizer.decode(prompt_ids).count("<|im_start|>assistant") - 1  # turns so far
        ids = self.tokenizer(self.turns[min(k, len(self.turns) - 1)], add_special_tokens=False)["input_ids"]
        return Reply(text=self.tokenizer.decode(ids), prompt_tokens=len(prompt_ids), completion_tokens=len(ids),
                     finish_reason="stop", token_ids=ids)


@pytest.fixture(scope="module")
def smoke_cfg(tmp_path_factory):
    from wdlib import params

    cfg = params.load("params/smoke.yaml")
    cfg.run.output_dir = str(tmp_path_factory.mktemp("runs"))
    cfg.dapo.max_completion_length = 2048
    return cfg


@pytest.fixture(scope="module")
def toolbox(smoke_cfg):
    from wdlib.tools import Toolbox

    with Toolbox.from_config(smoke_cfg) as tb:
        yield tb


SEARCH = '<think>Find it.</think>\n<tool_call>\n{"name": "search", "arguments": {"query": ["sqlite pragma"]}}\n</tool_call>'
BROKEN = '<think>Read it.</think>\n<tool_call>\n{"name": "visit", "arguments": {"url": \n</tool_call>'
ANSWER = "<think>Done.</think>\n<answer>PRAGMA</answer>"


def _rollout(cfg, toolbox, turns):
    from wdlib.dapo import AgentRollout, rollout_batch
    from wdlib.react import prompt_messages
    from wdlib.trajectory import QAPair

    tok = models.load_tokenizer(MODEL)
    qa = [QAPair(question="Which statement changes SQLite settings?", answer="PRAGMA")]
    rollout = AgentRollout(cfg, toolbox, qa)
    prompts = [prompt_messages(qa[0].question, style=cfg.agent.prompt)] * 2
    trajectories = rollout.run(prompts, ScriptedPolicy(tok, turns))
    return tok, trajectories, rollout_batch(trajectories, cfg.dapo.max_completion_length, pad_token_id=0)


def _segments(ids, mask):
    """Maximal runs of equal mask value: [(mask, ids)]."""
    runs = []
    for i, m in zip(ids, mask):
        if runs and runs[-1][0] == m:
            runs[-1][1].append(i)
        else:
            runs.append((m, [i]))
    return runs


def test_env_mask_is_zero_exactly_on_observations_and_ids_decode_to_the_conversation(smoke_cfg, toolbox):
    tok, trajectories, out = _rollout(smoke_cfg, toolbox, [SEARCH, ANSWER])
    traj = trajectories[0]
    assert traj.finish_reason == "answer" and traj.turns == 2 and len(traj.tool_calls) == 1
    ids, mask = out["completion_ids"][0], out["env_mask"][0]
    assert len(ids) == len(mask) and set(mask) == {0, 1}
    # the whole sequence decodes to the chat template's rendering of the trajectory (no re-tokenization drift)
    full = tok.decode(out["prompt_ids"][0] + ids)
    assert full + "\n" == tok.apply_chat_template(traj.messages, tokenize=False)
    # model runs are exactly the assistant turns (each closed by <|im_end|>), observation runs exactly the rest
    runs = _segments(ids, mask)
    assistant = [m["content"] for m in traj.messages if m["role"] == "assistant"]
    observations = [m["content"] for m in traj.messages[2:] if m["role"] == "user"]
    assert [tok.decode(r) for m, r in runs if m == 1] == [a + "<|im_end|>" for a in assistant]
    assert [tok.decode(r) for m, r in runs if m == 0] == [
        f"\n<|im_start|>user\n{o}<|im_end|>\n<|im_start|>assistant\n" for o in observations]
    assert observations[0].startswith("<tool_response>\nA Google search for 'sqlite pragma'")
    # stopping on </answer> ends with <|im_end|> (eos), so TRL does not count it as truncated
    assert ids[-1] == tok.convert_tokens_to_ids("<|im_end|>") and mask[-1] == 1
    assert out["model_tokens"][0] == sum(mask) and out["observation_tokens"][0] == mask.count(0)
    assert out["logprobs"] is None and out["truncated"] == [False, False]


def test_rollouts_start_from_the_configured_prompt_style(smoke_cfg, toolbox):
    from wdlib.dapo import AgentRollout, prompt_dataset
    from wdlib.react import prompt_messages
    from wdlib.trajectory import QAPair

    cfg = smoke_cfg.model_copy(deep=True)
    cfg.agent.prompt = "compact"
    qa = [QAPair(question="Which statement changes SQLite settings?", answer="PRAGMA")]
    rows = list(prompt_dataset(qa, cfg.agent.prompt))
    assert rows[0]["prompt"] == prompt_messages(qa[0].question, style="compact")
    rollout = AgentRollout(cfg, toolbox, qa)
    assert rollout.items([rows[0]["prompt"]]) == [{"question": qa[0].question, "gold": "PRAGMA", "qa_id": qa[0].id}]
    trajectories = rollout.run([rows[0]["prompt"]], ScriptedPolicy(models.load_tokenizer(MODEL), [SEARCH, ANSWER]))
    assert trajectories[0].messages[:2] == rows[0]["prompt"] and trajectories[0].sampling["prompt"] == "compact"


def test_malformed_tool_call_becomes_an_error_observation(smoke_cfg, toolbox):
    tok, trajectories, out = _rollout(smoke_cfg, toolbox, [BROKEN, ANSWER])
    traj = trajectories[0]
    assert traj.finish_reason == "answer" and traj.prediction == "PRAGMA"
    observation = traj.messages[3]["content"]
    assert traj.messages[3]["role"] == "user" and "Format error" in observation and "JSON" in observation
    assert traj.tool_calls == []  # nothing was executed
    from wdlib.rewards import format_reward

    assert format_reward(None, [None] * 2, trajectory=out["trajectory"]) == [0.0, 0.0]


def test_rollout_cut_at_max_completion_length(smoke_cfg, toolbox):
    from wdlib.dapo import rollout_batch

    _, trajectories, _ = _rollout(smoke_cfg, toolbox, [SEARCH, ANSWER])
    out = rollout_batch(trajectories, 50, pad_token_id=0)
    assert all(len(c) == 50 and len(m) == 50 for c, m in zip(out["completion_ids"], out["env_mask"]))
    assert out["truncated"] == [True, True] and out["finish_reason"] == ["max_tokens"] * 2


# ------------------------------------------------------------------ one real DAPO step (and a resume) on CPU
def test_real_dapo_step_and_resume_on_cpu(smoke_cfg):
    from wdlib.dapo import train
    from wdlib.trajectory import QAPair, write_jsonl

    cfg = smoke_cfg.model_copy(deep=True)
    cfg.run.name = "dapo-test"
    cfg.wandb.mode = "disabled"
    d = cfg.dapo
    d.num_generations, d.per_device_train_batch_size, d.max_steps, d.save_steps, d.max_refills = 2, 2, 1, 1, 0
    d.max_turns, d.max_new_tokens_per_turn, d.max_completion_length = 2, 16, 512
    d.mask_truncated_completions = False  # 16-token turns rarely finish: keep them in the loss for this check
    d.oversample_groups = 1  # the other question's group goes out with the step's own, in the same rollout call
    d.overlong_max_model_tokens, d.overlong_buffer = 34, 30  # rewards then differ with length: something to learn
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    # two questions, one per step: max_steps 1 ends mid-epoch, where a resumed Trainer would take one more step
    write_jsonl(cfg.run_dir / "qa.jsonl", [QAPair(question="What does the sqlite3 module provide?", answer="DB-API"),
                                           QAPair(question="Which module parses JSON?", answer="json")])
    initial = {k: v.clone() for k, v in models.load_model(MODEL, device="cpu").state_dict().items()}

    first = train(cfg)
    assert first["global_step"] == 1 and first["resumed_from"] is None
    logs = {k: v for entry in first["log_history"] for k, v in entry.items()}
    for key in ("reward", "rewards/format_reward/mean", "rewards/answer_reward/mean", "rewards/overlong_reward/mean",
                "dapo/kept_fraction", "dapo/kept_groups", "rollout/turns", "rollout/tool_calls",
                "rollout/observation_tokens", "time/rollout_s", "time/train_s", "entropy", "clip_ratio/region_mean"):
        assert key in logs, key
    assert logs["entropy"] > 0 and math.isfinite(logs["grad_norm"])  # the loss ran over real tokens (CPU shim)
    final = cfg.paths.checkpoint_dir("dapo")
    assert (final / "config.json").is_file() and (final / "tokenizer_config.json").is_file()
    trained = models.load_model(str(final), device="cpu").state_dict()
    moved = any(not torch.equal(initial[k], trained[k]) for k in initial)
    assert moved == (logs["dapo/kept_groups"] > 0)  # an informative group moves the weights; none leaves them
    # the completions log: this step's rollouts, the trained ones marked
    table = pd.read_parquet(cfg.paths.trainer_dir("dapo") / "completions" / "completions_00001.parquet")
    # the step's group and the oversampled one (a question drawn like a refill's), at most one group trained on
    assert len(table) == 4 and table["trained"].sum() == 2 * min(logs["dapo/kept_groups"], 1)

    second = train(cfg)  # max_steps already reached: nothing trained, the saved summary comes back
    assert second["global_step"] == 1 and (cfg.paths.trainer_dir("dapo") / "checkpoint-1").is_dir()
    assert second["log_history"] == json.loads(json.dumps(first["log_history"], default=str))
    assert not (cfg.paths.trainer_dir("dapo") / "checkpoint-2").exists()


# ------------------------------------------------------------------ rollouts from a low-precision copy
def test_generation_model_is_a_bf16_copy_synced_at_each_optimizer_step(monkeypatch):
    from types import SimpleNamespace

    # the copy mechanism itself, as on a CPU with native bf16 (elsewhere rollouts stay fp32: tests/test_models.py)
    monkeypatch.setattr(models, "cpu_runs_natively", lambda dtype: True)

    from wdlib.aio import run_sync
    from wdlib.dapo.rollout import generation_model
    from wdlib.llm import TransformersClient

    policy = models.load_model(MODEL, device="cpu")  # fp32, as the CPU trainer holds it
    # accelerate's bf16 mixed precision replaces the training model's forward by an autocast wrapper bound to it
    policy.forward = torch.autocast("cpu", dtype=torch.bfloat16)(policy.forward)
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=0))
    assert generation_model(trainer, policy, "same") is policy
    copy = generation_model(trainer, policy, "bfloat16")
    assert copy is not policy and {p.dtype for p in copy.parameters()} == {torch.bfloat16}
    assert next(policy.parameters()).dtype == torch.float32  # the training weights are untouched
    assert all(b.dtype == torch.float32 for n, b in copy.named_buffers() if "inv_freq" in n)
    assert generation_model(trainer, policy, "bfloat16") is copy  # same step: no new copy
    assert copy.forward.__self__ is copy  # its own forward, not the training model's wrapped one

    # The copy generates what the same checkpoint loaded in bf16 generates (greedy).
    tok = models.load_tokenizer(MODEL)
    direct = models.load_model(MODEL, dtype="bfloat16", device="cpu")
    clients = [TransformersClient(model=m, tokenizer=tok, max_new_tokens=12) for m in (copy, direct)]
    prompt = clients[0].encode_prompt([{"role": "user", "content": "Name a Python module for JSON."}])
    replies = [run_sync(c.generate(prompt, temperature=0)) for c in clients]
    assert replies[0].token_ids == replies[1].token_ids

    with torch.no_grad():  # an optimizer step: new weights, next step number
        for p in policy.parameters():
            p.add_(0.01)
    trainer.state.global_step = 1
    assert generation_model(trainer, policy, "bfloat16") is copy  # synced in place
    src, dst = dict(policy.named_parameters()), dict(copy.named_parameters())
    assert all(torch.equal(dst[n], src[n].to(torch.bfloat16)) for n in src)

"""wdlib.rewards: the format check on hand-made and real (WebDancer) episodes, the weighted reward, and the
TRL-compatible reward functions fed the way GRPOTrainer feeds them."""

import asyncio
import json
from pathlib import Path

import pytest

from wdlib import params
from wdlib.rewards import (
    REGISTRY,
    answer_score,
    check_format,
    format_reward,
    format_score,
    make_answer_reward,
    make_webdancer_reward,
    messages_from_text,
    reward,
    reward_weights,
    trl_reward_funcs,
)
from wdlib.trajectory import Trajectory, load_webdancer

SAMPLES = Path(__file__).resolve().parents[2] / "shared/data/webdancer-samples/sample_traj.jsonl"

SEARCH = ('<think>\nI need the year; search first.\n</think>\n<tool_call>\n'
          '{"name": "search", "arguments": {"query": ["Epsom Derby 1964 winner"]}}\n</tool_call>')
VISIT = ('<think>\nOpen the page.\n</think>\n<tool_call>\n'
         '{"name": "visit", "arguments": {"url": ["https://en.wikipedia.org/wiki/Santa_Claus_(horse)"], '
         '"goal": "who won"}}\n</tool_call>')
ANSWER = "<think>\nThe results say Santa Claus won the Epsom Derby.\n</think>\n<answer>Epsom Derby</answer>"
OBS = "<tool_response>\nSanta Claus won the 1964 Epsom Derby.\n</tool_response>"
PROMPT = [{"role": "system", "content": "You are a web agent."}, {"role": "user", "content": "Which race?"}]


def episode(*turns):
    """PROMPT + alternating assistant turns and tool responses."""
    messages = list(PROMPT)
    for i, turn in enumerate(turns):
        messages.append({"role": "assistant", "content": turn})
        if i < len(turns) - 1:
            messages.append({"role": "user", "content": OBS})
    return messages


@pytest.fixture
def cfg():
    return params.load("params/smoke.yaml")


# ------------------------------------------------------------------ format
def test_good_episodes_are_in_format():
    assert check_format(episode(SEARCH, VISIT, ANSWER)) is None
    assert format_score(episode(SEARCH, ANSWER)) == 1.0
    assert format_score(episode(ANSWER)) == 1.0  # answering at once is in format (grounding is a filter's job)


@pytest.mark.parametrize("messages, problem", [
    (episode(SEARCH.replace('"arguments"', "'arguments'"), ANSWER), "assistant turn 1: tool call is not valid JSON"),
    (episode(SEARCH.replace('"search"', '"browse"'), ANSWER), "unknown tool"),
    (episode(VISIT.replace(', "goal": "who won"', ""), ANSWER), "missing required argument 'goal'"),
    (episode(SEARCH, ANSWER.replace("<think>", "").replace("</think>", "")), "assistant turn 2: no <think>"),
    (episode(SEARCH, VISIT), "tool call never answered"),
    (episode(ANSWER, ANSWER), "answer given before the last turn"),
    (episode(SEARCH) + [{"role": "user", "content": OBS}], "ends with a tool response"),
    (episode(SEARCH, ANSWER)[:3] + [{"role": "user", "content": "please answer now"}]
     + episode(SEARCH, ANSWER)[4:], "is not a <tool_response>"),
    (episode(SEARCH, ANSWER)[:3] + episode(SEARCH, ANSWER)[4:], "follows another assistant turn"),
    (PROMPT, "no assistant turn"),
])
def test_bad_episodes_are_out_of_format(messages, problem):
    found = check_format(messages)
    assert found is not None and problem in found
    assert format_score(messages) == 0.0


def test_format_score_accepts_every_kind_of_item():
    messages = episode(SEARCH, ANSWER)
    traj = Trajectory(question="Which race?", messages=messages, gold="Epsom Derby", prediction="Epsom Derby")
    assert format_score(traj) == format_score(traj.to_dict()) == format_score(messages) == 1.0
    with pytest.raises(TypeError):
        format_score(42)
    with pytest.raises(ValueError, match="messages"):
        format_score({"question": "no messages"})


@pytest.mark.skipif(not SAMPLES.is_file(), reason="WebDancer samples not present")
def test_webdancer_released_trajectories_are_in_format():
    trajs = load_webdancer(SAMPLES)
    problems = {t.id: check_format(t.messages) for t in trajs}
    assert len(trajs) == 100
    assert {k: v for k, v in problems.items() if v} == {}


# ------------------------------------------------------------------ decoded completions
def test_messages_from_text_with_and_without_special_tokens():
    kept = (f"{SEARCH}<|im_end|>\n<|im_start|>user\n{OBS}<|im_end|>\n<|im_start|>assistant\n{ANSWER}<|im_end|>")
    skipped = f"{SEARCH}\nuser\n{OBS}\nassistant\n{ANSWER}"
    for text in (kept, skipped):
        messages = messages_from_text(text)
        assert [m["role"] for m in messages] == ["assistant", "user", "assistant"]
        assert messages[0]["content"] == SEARCH and messages[2]["content"] == ANSWER
        assert check_format(messages) is None


# ------------------------------------------------------------------ reward
def test_reward_is_weighted_sum(cfg):
    good = Trajectory(question="Which race?", messages=episode(SEARCH, ANSWER), gold="Epsom Derby",
                      prediction="Epsom Derby")
    wrong = Trajectory(question="Which race?", messages=episode(SEARCH, ANSWER), gold="Grand National",
                       prediction="Epsom Derby")
    broken = Trajectory(question="Which race?", messages=episode(SEARCH, VISIT), gold="Epsom Derby",
                        prediction=None)
    assert reward(good, cfg) == pytest.approx(0.1 + 0.9)
    assert reward(wrong, cfg) == pytest.approx(0.1)
    assert reward(broken, cfg) == 0.0
    assert wrong.judge["correct"] is False  # judging fills the trajectory's verdict
    cfg.rewards.format_weight, cfg.rewards.answer_weight = 0.5, 0.5
    assert reward(wrong, cfg) == pytest.approx(0.5)
    assert set(REGISTRY) == {"format", "answer", "reward"} and REGISTRY["reward"] is reward


def test_answer_score_reuses_an_existing_verdict(cfg):
    traj = Trajectory(question="q", messages=episode(ANSWER), gold="x", prediction="y",
                      judge={"correct": True, "method": "released"})
    assert answer_score(traj, cfg) == 1.0  # rules would say 0; the stored verdict is reused
    assert answer_score({"messages": episode(ANSWER), "answer": "Epsom Derby"}, cfg) == 1.0  # prediction read off
    assert answer_score({"messages": episode(ANSWER), "gold": None}, cfg) == 0.0  # no gold: not rewarded


# ------------------------------------------------------------------ TRL reward functions
def test_trl_reward_functions_read_per_sample_kwargs(cfg):
    """Called as GRPOTrainer calls them: prompts, completions, completion_ids and per-sample column lists."""
    good = Trajectory(question="Which race?", messages=episode(SEARCH, ANSWER), gold="Epsom Derby",
                      prediction="Epsom Derby")
    wrong = Trajectory(question="Which race?", messages=episode(SEARCH, ANSWER), gold="Grand National",
                       prediction="Epsom Derby")
    broken = Trajectory(question="Which race?", messages=episode(SEARCH, VISIT), gold="Epsom Derby")
    trajs = [good, wrong.to_dict(), broken]  # objects or dicts
    prompts = [PROMPT] * 3
    completions = [[{"role": "assistant", "content": "(decoded text, unused)"}]] * 3
    common = dict(completion_ids=[[1]] * 3, trainer_state=None, log_extra=None, log_metric=None)

    assert format_reward(prompts, completions, trajectory=trajs, **common) == [1.0, 1.0, 0.0]
    answer_reward = make_answer_reward(cfg)
    assert asyncio.run(answer_reward(prompts, completions, trajectory=trajs, **common)) == [1.0, 0.0, 0.0]
    combined = asyncio.run(make_webdancer_reward(cfg)(prompts, completions, trajectory=trajs, **common))
    assert combined == pytest.approx([1.0, 0.1, 0.0])
    # without trajectories: full `messages` per sample, and the dataset column `answer` as the gold
    messages = [episode(SEARCH, ANSWER)] * 2
    out = asyncio.run(answer_reward(prompts[:2], completions[:2], messages=messages,
                                    answer=["Epsom Derby", "Grand National"], **common))
    assert out == [1.0, 0.0]


def test_trl_reward_functions_rebuild_the_episode_from_the_completion(cfg):
    whole = f"{SEARCH}<|im_end|>\n<|im_start|>user\n{OBS}<|im_end|>\n<|im_start|>assistant\n{ANSWER}<|im_end|>"
    prompts = [PROMPT, PROMPT, "plain text prompt"]
    completions = [[{"role": "assistant", "content": whole}],  # conversational, whole episode in one message
                   [{"role": "assistant", "content": SEARCH}],  # cut off after a tool call
                   whole]  # plain text
    assert format_reward(prompts, completions) == [1.0, 0.0, 1.0]
    out = asyncio.run(make_answer_reward(cfg)(prompts, completions, gold=["epsom derby"] * 3))
    assert out == [1.0, 0.0, 1.0]


def test_trl_reward_funcs_and_weights_fit_grpo(cfg):
    from trl.trainer.utils import is_async_callable  # what GRPOTrainer uses to run rewards concurrently

    funcs = trl_reward_funcs(cfg)
    assert [f.__name__ for f in funcs] == ["format_reward", "answer_reward"]
    assert not is_async_callable(funcs[0]) and is_async_callable(funcs[1])
    assert reward_weights(cfg) == [0.1, 0.9]
    json.dumps(reward_weights(cfg))

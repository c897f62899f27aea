"""Rewards: R = format_weight·format + answer_weight·answer (paper: 0.1·format + 0.9·answer), both binary.

- format = 1 only if the trajectory is in WebDancer's ReAct format throughout (`wdlib.react.check_format`): every
  assistant turn parses with `wdlib.react.parse_turn` (a `<think>`, then one valid JSON tool call naming a known
  tool with its required arguments, or an answer), every tool call is answered by a `<tool_response>` user turn, and
  the last assistant turn gives the `<answer>` (a rollout cut off by the turn/token limit scores 0).
- answer = 1 if the judge (`wdlib.judge.judge_answer`, rules or LLM per `judge.mode`) says the prediction is correct.

Two layers, open-r1 style:
1. Per-trajectory scores, in `REGISTRY`: `format_score(item)`, `answer_score(item, cfg, client)`,
   `reward(item, cfg, client)`. An item is a `Trajectory`, a trajectory dict, or a ChatML message list.
2. TRL reward functions `(prompts, completions, **kwargs) -> list[float]` for `GRPOTrainer(reward_funcs=...)`:
   `format_reward` and the factories `make_answer_reward(cfg, client)`, `make_webdancer_reward(cfg, client)`;
   `trl_reward_funcs(cfg, client)` returns `[format_reward, answer_reward]` to pair with
   `GRPOConfig(reward_weights=reward_weights(cfg))` (TRL then logs both parts separately).

   Per-sample kwargs they read (rollout_func extra keys or dataset columns, one list entry per completion),
   first found wins:
     - `trajectory`: Trajectory objects or their dicts (preferred: full messages, prediction, gold, question);
     - `messages`: the full ChatML list of the episode;
     - `prediction`: the final answer text; `gold` or `answer`: the reference answer; `question`.
   Without `trajectory`/`messages` the episode is rebuilt from prompt + completion; a completion string holding the
   whole decoded multi-turn episode is split on its `<tool_response>` blocks (ChatML markers removed).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from wdlib.aio import run_sync
from wdlib.config import Config, RewardsParams
from wdlib.judge import judge_many
from wdlib.react import Messages, check_format, final_answer, messages_from_text
from wdlib.trajectory import Trajectory


# ------------------------------------------------------------------ reading an episode
def _messages(item: Any) -> Messages:
    if isinstance(item, Trajectory):
        return item.messages
    if isinstance(item, dict):
        if "messages" not in item:
            raise ValueError(f"a trajectory dict needs 'messages'; got keys {sorted(item)}")
        return item["messages"]
    if isinstance(item, str):
        return messages_from_text(item)
    if isinstance(item, list):
        return item
    raise TypeError(f"expected a Trajectory, a trajectory dict, a message list or text; got {type(item).__name__}")


# ------------------------------------------------------------------ per-trajectory scores (the registry)
def format_score(item: Any) -> float:
    """1.0 if the whole episode is in format (see `check_format`), else 0.0."""
    return float(check_format(_messages(item)) is None)


def _judge_item(item: Any) -> dict[str, Any]:
    if isinstance(item, Trajectory):
        return {"question": item.question, "gold": item.gold, "prediction": item.prediction}
    if isinstance(item, dict):
        prediction = item.get("prediction")
        if prediction is None and item.get("messages"):
            prediction = final_answer(item["messages"])
        gold = item.get("gold") if item.get("gold") is not None else item.get("answer")
        return {"question": item.get("question") or "", "gold": gold, "prediction": prediction}
    raise TypeError(f"answer scoring needs a Trajectory or a dict (prediction or messages, gold); "
                    f"got {type(item).__name__}")


async def answer_scores(items: Iterable[Any], cfg: Config, client: Any = None, concurrency: int = 8,
                        reuse: bool = True) -> list[float]:
    """Judge many items concurrently: 1.0 correct, 0.0 wrong or unjudgeable (no gold, judge error).

    With `reuse`, a Trajectory already carrying a verdict (`judge["correct"]` not None) is not judged again;
    freshly judged Trajectory objects get their `judge` field filled in.
    """
    items = list(items)
    scores: list[float | None] = [None] * len(items)
    todo = []
    for i, item in enumerate(items):
        if reuse and isinstance(item, Trajectory) and item.judge.get("correct") is not None:
            scores[i] = float(bool(item.judge["correct"]))
        else:
            todo.append(i)
    results = await judge_many([_judge_item(items[i]) for i in todo], cfg, client, concurrency, progress=False)
    for i, result in zip(todo, results):
        if isinstance(items[i], Trajectory):
            items[i].judge = result
        scores[i] = float(bool(result["correct"]))
    return scores


def answer_score(item: Any, cfg: Config, client: Any = None) -> float:
    """1.0 if the judge says the item's prediction matches its gold."""
    return run_sync(answer_scores([item], cfg, client))[0]


def _weights(cfg: Config | RewardsParams) -> tuple[float, float]:
    rcfg = getattr(cfg, "rewards", cfg)
    return rcfg.format_weight, rcfg.answer_weight


def reward(item: Any, cfg: Config, client: Any = None) -> float:
    """format_weight·format + answer_weight·answer."""
    format_weight, answer_weight = _weights(cfg)
    return format_weight * format_score(item) + answer_weight * answer_score(item, cfg, client)


REGISTRY: dict[str, Callable[..., float]] = {"format": format_score, "answer": answer_score, "reward": reward}


# ------------------------------------------------------------------ TRL reward functions
def _per_sample(prompts: list, completions: list, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per completion: messages, prediction, gold, question, and the Trajectory object if given."""
    samples = []
    for i, completion in enumerate(completions):
        def given(key: str) -> Any:
            values = kwargs.get(key)
            return values[i] if isinstance(values, (list, tuple)) and i < len(values) else None

        traj = given("trajectory")
        if isinstance(traj, dict):
            traj = Trajectory.from_dict(traj)
        if traj is not None:
            messages = traj.messages
        elif given("messages") is not None:
            messages = given("messages")
        elif isinstance(completion, str):
            messages = messages_from_text(completion)
        else:  # conversational: prompt messages + completion messages (one of which may hold the whole episode)
            messages = list(prompts[i]) if isinstance(prompts[i], list) else []
            for message in completion:
                if message.get("role") == "assistant" and "<tool_response>" in (message.get("content") or ""):
                    messages.extend(messages_from_text(message["content"]))
                else:
                    messages.append(message)
        prediction = given("prediction")
        if prediction is None:
            prediction = traj.prediction if traj is not None else final_answer(messages)
        gold = given("gold") if given("gold") is not None else given("answer")
        if gold is None and traj is not None:
            gold = traj.gold
        question = given("question") or (traj.question if traj is not None else "")
        samples.append({"messages": messages, "prediction": prediction, "gold": gold, "question": question,
                        "trajectory": traj})
    return samples


def format_reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
    """TRL reward: 1.0 per completion whose whole episode is in format (see module docstring for kwargs)."""
    return [format_score(s["messages"]) for s in _per_sample(prompts, completions, kwargs)]


async def _answer_rewards(prompts: list, completions: list, cfg: Config, client: Any, concurrency: int,
                          kwargs: dict[str, Any]) -> list[float]:
    samples = _per_sample(prompts, completions, kwargs)
    items = [{"messages": s["messages"], "prediction": s["prediction"], "gold": s["gold"],
              "question": s["question"]} for s in samples]
    return await answer_scores(items, cfg, client, concurrency)


def make_answer_reward(cfg: Config, client: Any = None, concurrency: int = 16) -> Callable:
    """TRL reward (async, so TRL runs it alongside other async rewards): 1.0 when the judge accepts the answer."""

    async def answer_reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        return await _answer_rewards(prompts, completions, cfg, client, concurrency, kwargs)

    return answer_reward


def make_webdancer_reward(cfg: Config, client: Any = None, concurrency: int = 16) -> Callable:
    """TRL reward (async): the paper's combined R = format_weight·format + answer_weight·answer in one function."""
    format_weight, answer_weight = _weights(cfg)

    async def webdancer_reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        formats = format_reward(prompts, completions, **kwargs)
        answers = await _answer_rewards(prompts, completions, cfg, client, concurrency, kwargs)
        return [format_weight * f + answer_weight * a for f, a in zip(formats, answers)]

    return webdancer_reward


def trl_reward_funcs(cfg: Config, client: Any = None, concurrency: int = 16) -> list[Callable]:
    """[format_reward, answer_reward]; pass `reward_weights(cfg)` as GRPOConfig.reward_weights."""
    return [format_reward, make_answer_reward(cfg, client, concurrency)]


def reward_weights(cfg: Config) -> list[float]:
    return list(_weights(cfg))

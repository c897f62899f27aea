"""The trajectory filter funnel: validity → correctness → quality (WebDancer §3.2).

- validity: the whole episode is in WebDancer's ReAct format (`wdlib.react.check_format`: every assistant turn
  parses, tool calls are valid JSON naming a known tool with its required arguments, each call is answered by a
  `<tool_response>`, the episode ends in an `<answer>`).
- correctness: the judge (`wdlib.judge.judge_answer`, rules or LLM per `judge.mode`) accepts the prediction against
  the gold answer. A trajectory that already carries a verdict (`judge["correct"]` set, e.g. WebDancer's released
  samples) keeps it unless `filters.rejudge`.
- quality, three checks:
    * repetition: no word `filters.ngram`-gram occurs more than `filters.max_ngram_repeats` times over the assistant
      turns (words = lowercase `\\w+` runs; n-grams are counted inside each turn, never across a turn boundary,
      and summed over turns; tool-call JSON counts too, so an agent looping on the same call is caught);
    * grounding (`filters.require_supported_answer`): the answer appears in some tool response — see
      `answer_supported`: in normalised words (`wdlib.text.normalize_answer`; "72,067" = "72067"), the prediction
      (or the gold) occurs as a phrase in the observations, or at least `filters.support_min_recall` of its content
      words (`wdlib.text.STOPWORDS` left out) occur in them. An answer given without any tool response is unsupported;
    * optional (`filters.llm_quality_check`): an LLM reviewer (the judge client) rates non-redundancy, goal alignment
      and logic; its reply ends in `keep: yes|no`; no verdict counts as a drop.

Every trajectory gets `filters = {"validity": {...}, "correctness": {...}, "quality": {...}, "kept", "dropped_by"}`;
a stage verdict is `{"passed": bool|None, "reason": str, "kind": str}` (passed None = not reached). `run_funnel`
returns the kept trajectories and the counts for funnel.json.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any, Iterable

from tqdm.auto import tqdm

from wdlib.aio import run_sync
from wdlib.config import Config, JudgeParams
from wdlib.judge import judge_many, parse_yes_no
from wdlib.react import check_format
from wdlib.text import STOPWORDS, normalize_answer
from wdlib.trajectory import Trajectory

STAGES = ("validity", "correctness", "quality")
_NOT_REACHED = {"passed": None, "reason": "not reached", "kind": "not-reached"}


def _verdict(passed: bool, reason: str = "", kind: str = "ok", **details: Any) -> dict[str, Any]:
    return {"passed": passed, "reason": reason, "kind": kind, **details}


# ------------------------------------------------------------------ validity
def check_validity(traj: Trajectory) -> dict[str, Any]:
    problem = check_format(traj.messages)
    return _verdict(True) if problem is None else _verdict(False, problem, "format")


# ------------------------------------------------------------------ correctness
def check_correctness(traj: Trajectory) -> dict[str, Any]:
    """Reads the verdict already in `traj.judge` (the funnel fills it in first)."""
    if traj.gold is None:
        return _verdict(False, "no gold answer to judge against", "no-gold")
    correct = traj.judge.get("correct")
    method = traj.judge.get("method", "?")
    if correct is None:
        return _verdict(False, f"judge gave no verdict ({method}): {str(traj.judge.get('raw'))[:200]}",
                        "judge-error")
    if not correct:
        kind = "no-answer" if not (traj.prediction or "").strip() else "wrong"
        return _verdict(False, f"judged wrong by {method}: {traj.prediction!r} vs gold {traj.gold!r}", kind)
    return _verdict(True, f"judged correct by {method}")


# ------------------------------------------------------------------ quality
def _episode(traj: Trajectory) -> tuple[list[str], list[str]]:
    """(assistant turn texts, tool response texts) after the prompt."""
    start = next((i for i, m in enumerate(traj.messages) if m["role"] == "assistant"), len(traj.messages))
    episode = traj.messages[start:]
    return ([m["content"] for m in episode if m["role"] == "assistant"],
            [m["content"] for m in episode if m["role"] == "user" and "<tool_response>" in m["content"]])


def max_ngram_count(texts: Iterable[str] | str, n: int) -> tuple[int, str]:
    """The most frequent word n-gram over `texts` and how often it occurs (0, "" when no text has n words)."""
    if isinstance(texts, str):
        texts = [texts]
    counts: Counter = Counter()
    for text in texts:
        words = re.findall(r"\w+", text.lower())
        counts.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    if not counts:
        return 0, ""
    gram, count = counts.most_common(1)[0]
    return count, " ".join(gram)


def _words(text: str | None) -> list[str]:
    """The normalised words of `text` (any non-word character a word break), thousands separators joined
    ("72,067" → "72067")."""
    return normalize_answer(re.sub(r"(?<=\d),(?=\d)", "", text or ""), word_breaks=r"\W").split()


def answer_support(answer: str | None, observations: list[str]) -> float:
    """How well the observations back `answer`: 1.0 if its words occur as a phrase in them, else the fraction of
    its content words (stopwords dropped unless that leaves nothing) that occur in them. Words as in `_words`."""
    words = _words(answer)
    if not words or not observations:
        return 0.0
    seen_words = _words("\n".join(observations))
    if f" {' '.join(words)} " in f" {' '.join(seen_words)} ":
        return 1.0
    content = [w for w in words if w not in STOPWORDS] or words
    seen = set(seen_words)
    return sum(w in seen for w in content) / len(content)


def answer_supported(prediction: str | None, gold: str | None, observations: list[str],
                     min_recall: float = 0.5) -> tuple[bool, float]:
    """(supported, score): the prediction or the gold is backed by some tool response (see `answer_support`).

    The gold counts too because, once correctness has passed, a gold found in the observations shows the agent read
    the evidence even when it phrased the answer differently ("Epsom Derby" for "English horse race Derby").
    """
    score = max(answer_support(prediction, observations), answer_support(gold, observations) if gold else 0.0)
    return score >= min_recall, score


QUALITY_PROMPT = """\
You are reviewing a web-research agent's trajectory before it is used as training data. The agent thinks, calls \
tools (search, visit), reads the tool responses, and answers.

Question: {question}
Reference answer: {gold}

Trajectory:
{trajectory}

Judge three things:
non_redundant: does the agent avoid pointless repetition (the same search or visit again for no reason, reasoning \
that goes in circles)?
goal_aligned: does every step serve answering the question?
logical: does each step follow from what the agent has seen, with the final answer drawn from the tool responses \
and no invented facts?

Reply with these lines, in this order:
non_redundant: yes or no
goal_aligned: yes or no
logical: yes or no
reasoning: one or two sentences
keep: yes if all three are yes, otherwise no

The last line of your reply must be `keep: yes` or `keep: no`."""


def _render(traj: Trajectory, max_chars: int = 1200) -> str:
    lines = []
    for m in traj.messages[2:]:
        text = m["content"].strip()
        if len(text) > max_chars:
            text = text[:max_chars] + " …[truncated]"
        lines.append(f"[{'agent' if m['role'] == 'assistant' else 'tool'}] {text}")
    return "\n\n".join(lines)


async def llm_quality(traj: Trajectory, client: Any, cfg: Config | JudgeParams) -> dict[str, Any]:
    jcfg = getattr(cfg, "judge", cfg)
    prompt = QUALITY_PROMPT.format(question=traj.question, gold=traj.gold, trajectory=_render(traj))
    reply = await client.chat([{"role": "user", "content": prompt}], temperature=jcfg.temperature,
                              max_new_tokens=jcfg.max_new_tokens)
    keep = parse_yes_no(reply.text, "keep")
    ratings = {k: parse_yes_no(reply.text, k) for k in ("non_redundant", "goal_aligned", "logical")}
    return {"keep": keep, "ratings": ratings, "raw": reply.text}


def check_quality(traj: Trajectory, cfg: Config) -> dict[str, Any]:
    """Repetition and grounding checks (the LLM review, if on, is added by the funnel)."""
    fcfg = cfg.filters
    assistant, observations = _episode(traj)
    repeats, gram = max_ngram_count(assistant, fcfg.ngram)
    supported, support = answer_supported(traj.prediction, traj.gold, observations, fcfg.support_min_recall)
    details = {"max_ngram_repeats": repeats, "answer_support": round(support, 3)}
    if repeats > fcfg.max_ngram_repeats:
        return _verdict(False, f"{fcfg.ngram}-gram repeated {repeats} times (max {fcfg.max_ngram_repeats}): "
                               f"{gram!r}", "ngram-repeat", **details)
    if fcfg.require_supported_answer and not supported:
        why = "no tool response" if not observations else f"support {support:.2f} < {fcfg.support_min_recall}"
        return _verdict(False, f"answer {traj.prediction!r} not found in any tool response ({why})",
                        "unsupported-answer", **details)
    return _verdict(True, **details)


# ------------------------------------------------------------------ the funnel
def _needs_judging(traj: Trajectory, rejudge: bool) -> bool:
    return traj.gold is not None and (rejudge or traj.judge.get("correct") is None)


async def afilter(trajectories: list[Trajectory], cfg: Config, client: Any = None, *, rejudge: bool | None = None,
                  concurrency: int | None = None, progress: bool = True) -> list[Trajectory]:
    """Run every stage on every trajectory, setting `traj.filters` (and `traj.judge` where it judged). In place."""
    fcfg = cfg.filters
    rejudge = fcfg.rejudge if rejudge is None else rejudge
    if concurrency is None:
        spec = getattr(getattr(cfg, "models", None), "judge", None)
        concurrency = spec.concurrency if spec is not None else 8
    if fcfg.llm_quality_check and client is None:
        raise ValueError("filters.llm_quality_check is on but no judge client was given (set models.judge)")

    for traj in trajectories:
        traj.filters = {"validity": check_validity(traj)}

    valid = [t for t in trajectories if t.filters["validity"]["passed"]]
    to_judge = [t for t in valid if _needs_judging(t, rejudge)]
    for traj, result in zip(to_judge, await judge_many(to_judge, cfg, client, concurrency, progress)):
        traj.judge = result
    for traj in valid:
        traj.filters["correctness"] = check_correctness(traj)

    correct = [t for t in valid if t.filters["correctness"]["passed"]]
    for traj in correct:
        traj.filters["quality"] = check_quality(traj, cfg)
    if fcfg.llm_quality_check:
        reviewed = [t for t in correct if t.filters["quality"]["passed"]]
        limit = asyncio.Semaphore(concurrency)
        bar = tqdm(total=len(reviewed), desc="llm quality", disable=not progress or len(reviewed) < 2)

        async def review(traj: Trajectory) -> None:
            async with limit:
                try:
                    result = await llm_quality(traj, client, cfg)
                except Exception as exc:  # a failed review drops this trajectory, not the batch
                    result = {"keep": None, "ratings": {}, "raw": f"{type(exc).__name__}: {exc}"}
                bar.update(1)
            verdict = traj.filters["quality"]
            verdict["llm"] = result
            if not result["keep"]:
                failed = [k for k, v in result["ratings"].items() if v is False]
                verdict.update(passed=False, kind="llm-quality",
                               reason=f"LLM review: {', '.join(failed) or 'no verdict'}")

        await asyncio.gather(*(review(t) for t in reviewed))
        bar.close()

    for traj in trajectories:
        for stage in STAGES:
            traj.filters.setdefault(stage, dict(_NOT_REACHED))
        dropped_by = next((s for s in STAGES if not traj.filters[s]["passed"]), None)
        traj.filters["kept"] = dropped_by is None
        traj.filters["dropped_by"] = dropped_by
    return trajectories


def funnel_counts(trajectories: list[Trajectory]) -> dict[str, Any]:
    """{"input", "validity", "correctness", "quality", "kept", "dropped": {stage: {kind: n}}} from the verdicts."""
    counts: dict[str, Any] = {"input": len(trajectories)}
    for stage in STAGES:
        counts[stage] = sum(bool(t.filters.get(stage, {}).get("passed")) for t in trajectories)
    counts["kept"] = sum(bool(t.filters.get("kept")) for t in trajectories)
    dropped: dict[str, Counter] = {stage: Counter() for stage in STAGES}
    for t in trajectories:
        stage = t.filters.get("dropped_by")
        if stage:
            dropped[stage][t.filters[stage].get("kind", "?")] += 1
    counts["dropped"] = {stage: dict(c) for stage, c in dropped.items()}
    return counts


async def arun_funnel(trajectories: Iterable[Trajectory], cfg: Config, client: Any = None,
                      **kwargs: Any) -> tuple[list[Trajectory], dict[str, Any]]:
    trajectories = list(trajectories)
    await afilter(trajectories, cfg, client, **kwargs)
    return [t for t in trajectories if t.filters["kept"]], funnel_counts(trajectories)


def run_funnel(trajectories: Iterable[Trajectory], cfg: Config, client: Any = None,
               **kwargs: Any) -> tuple[list[Trajectory], dict[str, Any]]:
    """Filter trajectories (verdicts set in place): (kept trajectories, funnel counts for funnel.json).

    kwargs: `rejudge` (default `filters.rejudge`), `concurrency` (default `models.judge.concurrency` or 8),
    `progress`. Works from notebooks too (a running event loop is handled by `wdlib.aio.run_sync`).
    """
    return run_sync(arun_funnel(trajectories, cfg, client, **kwargs))

"""Format demonstrations: short, scripted ReAct episodes for CPU-scale runs.

A 135M model cannot learn WebDancer's format from a handful of long real trajectories: after the smoke SFT it never
emits a well-formed episode, every DAPO reward is 0 and dynamic sampling drops every group. These episodes teach the
format at that scale. Each one uses the agent's exact prompts and the real tools: it searches a query read off the
question, sometimes visits a page, and answers the gold answer. The answer is copied, not found by reasoning, so
this is NOT a substitute for teacher trajectories (`wdlib.synthesis.trajectories`) at scale;
`trajectories.format_demos.num` is 0 except in the CPU smoke params.

`write_format_demos(cfg, pages, toolbox, exclude)` is what notebook 01 calls: template CrawlQA over the crawl (none
of the run's own QA, so evaluation and RL questions are never demonstrated) → one scripted episode each →
`cfg.paths.format_demos` (`<run>/format_demos.jsonl`), which the SFT stage reads as one more source.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from typing import Any, Iterable

from wdlib.config import Config
from wdlib.react import RESULT_SEPARATOR, parse_search_results, prompt_messages, tool_response
from wdlib.synthesis.crawl import CrawledPage
from wdlib.synthesis.crawlqa import template_qa
from wdlib.synthesis.qa import QUOTED
from wdlib.trajectory import QAPair, Trajectory, load_trajectories, write_jsonl

_QUESTION_WORDS = {"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "many", "much", "is", "are",
                   "was", "were", "does", "do", "did", "the", "a", "an", "of", "on", "in", "to", "for", "and", "or",
                   "it", "its", "that", "this", "page", "have", "has", "by", "with", "from"}


def scripted_query(question: str, max_words: int = 10) -> str:
    """A search query read off the question: its quoted names (“…”) if any, else its first content words."""
    quoted = QUOTED.findall(question)
    if quoted:
        return " ".join(quoted)
    words = [w for w in re.findall(r"[\w.+#-]+", question) if w.lower() not in _QUESTION_WORDS]
    return " ".join(words[:max_words]) or question.strip()


def cap_chars(text: str, max_chars: int) -> str:
    """`text` if it fits in `max_chars`, else cut at the last line end before it (ending in one newline)."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars].rsplit("\n", 1)[0].rstrip() + "\n"


def cap_search_observation(text: str, max_results: int = 3, max_chars: int = 1200) -> str:
    """The first `max_results` results of each query in a rendered search observation, at most `max_chars`."""
    parts = []
    for part in text.strip().split(RESULT_SEPARATOR):
        cut = re.search(rf"\n\n{max_results + 1}\. \[", part)
        if cut:  # the header says how many results follow
            part = re.sub(r"found \d+ results:", f"found {max_results} results:", part[:cut.start()], count=1)
        parts.append(part)
    return cap_chars(RESULT_SEPARATOR.join(parts), max_chars).rstrip() + "\n"


def _assistant_turn(think: str, *, call: dict | None = None, answer: str | None = None) -> str:
    action = (f"<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>" if call is not None
              else f"<answer>{answer}</answer>")
    return f"<think>\n{think}\n</think>\n{action}"


async def scripted_trajectory(qa: QAPair, toolbox: Any, *, visit: bool = False, max_results: int = 3,
                              max_observation_chars: int = 1200, date: str | None = None) -> Trajectory:
    """One short, well-formed WebDancer episode for `qa` (see `scripted_trajectories`)."""
    messages = prompt_messages(qa.question, date)
    calls = []

    async def act(think: str, call: dict) -> str:
        messages.append({"role": "assistant", "content": _assistant_turn(think, call=call)})
        calls.append(call)
        observation = await toolbox.call(call["name"], call["arguments"])
        observation = (cap_search_observation(observation, max_results, max_observation_chars)
                       if call["name"] == "search" else cap_chars(observation, max_observation_chars))
        messages.append({"role": "user", "content": tool_response(observation)})
        return observation

    query = scripted_query(qa.question)
    # thoughts stay short: a rollout turn gets only dapo.max_new_tokens_per_turn tokens (64 in the smoke run)
    observation = await act("I need to look this up. Let me search the web.",
                            {"name": "search", "arguments": {"query": [query]}})
    if visit:
        urls = list(qa.evidence_urls) or [r["url"] for r in parse_search_results(observation) if r.get("url")]
        if urls:
            await act("The first result looks relevant. Let me read that page.",
                      {"name": "visit", "arguments": {"url": [urls[0]], "goal": qa.question}})
    messages.append({"role": "assistant", "content": _assistant_turn(
        "I have found the answer.", answer=qa.answer)})
    return Trajectory(question=qa.question, messages=messages, gold=qa.answer, prediction=qa.answer,
                      turns=len(calls) + 1, tool_calls=calls, finish_reason="answer", model="scripted",
                      source="scripted", qa_id=qa.id)


async def scripted_trajectories(qa_pairs: Iterable[QAPair], toolbox: Any, *, visit: bool | float = 0.5,
                                max_results: int = 3, max_observation_chars: int = 1200, date: str | None = None,
                                seed: int = 0, concurrency: int = 8) -> list[Trajectory]:
    """Scripted demonstrator: one short, well-formed episode per QA pair, written by a script, not a model.

    Each episode uses the agent's exact prompts (`wdlib.react.prompt_messages`) and real tools:
    turn 1 thinks briefly and calls `search` with a query read off the question (`scripted_query`); the real
    observation (`toolbox.call`, capped to the first `max_results` results and `max_observation_chars`) comes back as
    the agent's `<tool_response>` user turn; with probability `visit` (a bool: always/never) a second turn visits the
    first evidence URL (or the top result) with the question as goal; the last turn answers the gold answer.
    Every assistant turn passes `wdlib.react.parse_turn` and `wdlib.react.check_format` accepts the episode.

    See the module docstring for why these exist and what they are not.
    """
    rng = random.Random(seed)
    qa_pairs = list(qa_pairs)
    visits = [rng.random() < visit for _ in qa_pairs]  # True/False compare as 1.0/0.0: always/never
    gate = asyncio.Semaphore(concurrency)

    async def one(qa: QAPair, v: bool) -> Trajectory:
        async with gate:
            return await scripted_trajectory(qa, toolbox, visit=v, max_results=max_results,
                                             max_observation_chars=max_observation_chars, date=date)

    return list(await asyncio.gather(*(one(q, v) for q, v in zip(qa_pairs, visits))))


async def write_format_demos(cfg: Config, pages: list[CrawledPage], toolbox: Any,
                             exclude: Iterable[str] = ()) -> list[Trajectory]:
    """`trajectories.format_demos.num` scripted episodes over template QA from `pages`, skipping questions in
    `exclude`; written to `cfg.paths.format_demos`. A file written with the same settings is reused."""
    d = cfg.trajectories.format_demos
    path = cfg.paths.format_demos
    stamp = path.with_suffix(".settings.json")
    settings = {**d.model_dump(), "pages": len(pages), "seed": cfg.run.seed}
    if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return load_trajectories(path)
    if d.num == 0:  # switched off: no stale demonstrations left for the SFT stage to read
        path.unlink(missing_ok=True)
        stamp.unlink(missing_ok=True)
        return []
    taken = {q.strip().lower() for q in exclude}
    qa = [q for q in template_qa(pages, d.num + len(taken), seed=cfg.run.seed + 1)
          if q.question.strip().lower() not in taken][:d.num]
    demos = await scripted_trajectories(qa, toolbox, visit=d.visit, max_results=d.max_results,
                                        max_observation_chars=d.max_observation_chars, seed=cfg.run.seed)
    write_jsonl(path, demos)
    stamp.write_text(json.dumps(settings))
    return demos

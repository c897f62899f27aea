"""Graded QA with grounded teacher trajectories: questions of three difficulty levels over the local web, each
verified answerable with the real tools by the episode that answers it.

For every candidate question (`wdlib.synthesis.facts`) a scripted teacher runs a real episode through the toolbox:

  search the question → if a result's snippet states the answer: answer, quoting it
                      → else read the subject's page (visit, goal = the question) and answer, quoting it
  level 3 first: search the question → a result names the bridge entity ("directed by Akira Kurosawa") → search it

Each thought says what was found and where (`Result 2 ("Otto Hahn - Wikipedia") says: "…(1879–1968)". So the
answer is 1879.`), and the answer is text that appears in an observation: the gold is looked for in snippets and
page evidence, never in titles or links. A candidate whose episode does not reach its gold is dropped and counted
(the reason is kept in the report). So a kept question comes with its proof: `provenance["path"]` lists the
calls, and the teacher's trajectory is an SFT example that shows searching and reading, not guessing.

The kept questions are split by the page that states their answer (all questions about one page land in one split):
held-out evaluation, development (to choose settings), DAPO (questions never seen in SFT) and SFT.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from wdlib.config import Config
from wdlib.react import parse_search_results, prompt_messages, tool_response
from wdlib.synthesis.facts import Fact, chain_question, description, docs_facts, encyclopedia_facts, page_name, question
from wdlib.trajectory import QAPair, Trajectory

LEVELS = (1, 2, 3)
SPLITS = ("eval", "dev", "dapo", "sft")
TEACHER = "scripted-teacher"


@dataclass
class Candidate:
    level: int
    question: str
    answer: str
    relation: str
    subject_url: str  # the page the last hop reads
    answer_url: str  # the page that states the answer (the unit of the split)
    bridge: tuple[str, str, str] | None = None  # level 3: (name, page url, role) of the entity reached first


# ------------------------------------------------------------------ evidence in observations
def find_answer(answer: str, observation: str) -> re.Match | None:
    """Where `answer` is stated in an observation: as a whole word, in result snippets or page evidence (titles,
    links and the visit header restate the query, not evidence). A Python version counts only as "New in version X"."""
    blank = lambda m: " " * len(m.group(0))  # noqa: E731  (same length: positions stay valid in the original)
    text = re.sub(r"^\d+\. \[.*\]\(.*\)$|^The useful information in .*$", blank, observation, flags=re.M)
    text = re.sub(r"https?://\S+", blank, text)
    if re.fullmatch(r"\d\.\d+", answer):
        version = re.search(rf"New in version {re.escape(answer)}(?!\d)", text)
        return re.compile(re.escape(answer)).search(text, version.start()) if version else None
    return re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text, flags=re.I)


def quote(observation: str, answer: str, max_words: int = 24) -> str:
    """The sentence (or line) of the observation that states `answer`, cut to about `max_words` around it."""
    m = find_answer(answer, observation)
    start = max(observation.rfind("\n", 0, m.start()), observation.rfind(". ", 0, m.start()) + 1) + 1
    ends = [i for i in (observation.find("\n", m.end()), observation.find(". ", m.end())) if i != -1]
    sentence = observation[start:min(ends) if ends else len(observation)].strip().rstrip(".")
    words = sentence.split()
    if len(words) <= max_words:
        return sentence
    at = len(observation[start:m.start()].split())
    lo = max(0, min(at - max_words // 2, len(words) - max_words))
    return ("..." if lo else "") + " ".join(words[lo:lo + max_words]) + ("..." if lo + max_words < len(words) else "")


def _result_with(observation: str, answer: str) -> tuple[int, str]:
    """(rank, title) of the search result whose snippet states `answer`."""
    m = find_answer(answer, observation)
    results = list(re.finditer(r"^(\d+)\. \[(.*)\]\(.*\)$", observation[:m.start()], flags=re.M))
    return (int(results[-1].group(1)), results[-1].group(2)) if results else (1, "")


# ------------------------------------------------------------------ the teacher's episode
class _Episode:
    def __init__(self, question: str, prompt: str, date: str | None):
        self.question = question
        self.messages = prompt_messages(question, date, style=prompt)
        self.calls: list[dict] = []

    async def act(self, toolbox: Any, think: str, name: str, arguments: dict) -> str:
        call = {"name": name, "arguments": arguments}
        self.messages.append({"role": "assistant", "content":
                              f"<think>\n{think}\n</think>\n<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n"
                              "</tool_call>"})
        self.calls.append(call)
        observation = await toolbox.call(name, arguments)
        self.messages.append({"role": "user", "content": tool_response(observation)})
        return observation

    def answer(self, think: str, answer: str) -> None:
        self.messages.append({"role": "assistant", "content": f"<think>\n{think}\n</think>\n<answer>{answer}</answer>"})


async def teacher_episode(c: Candidate, toolbox: Any, *, prompt: str = "ours", date: str | None = None,
                          qa_id: str = "") -> tuple[Trajectory | None, str]:
    """The grounded episode answering `c`, or (None, why it cannot be answered along this path)."""
    ep = _Episode(c.question, prompt, date)
    obs = await ep.act(toolbox, "Let me search the web for this.", "search", {"query": [c.question]})
    subject_url = c.subject_url
    if c.bridge is not None:
        name, subject_url, role = c.bridge
        if not find_answer(name, obs):
            return None, "the first search does not name the bridge entity"
        rank, title = _result_with(obs, name)
        think = (f"Result {rank} (\"{title}\") says: \"{quote(obs, name)}\". So the {role} is {name}. "
                 f"Now I search for {name}.")
        obs = await ep.act(toolbox, think, "search", {"query": [name]})
    if find_answer(c.answer, obs):
        rank, title = _result_with(obs, c.answer)
        ep.answer(f"Result {rank} (\"{title}\") says: \"{quote(obs, c.answer)}\". So the answer is {c.answer}.",
                  c.answer)
    else:
        results = parse_search_results(obs)
        rank = next((i for i, r in enumerate(results, 1) if r["url"] == subject_url), None)
        if rank is None:
            return None, "the subject's page is not among the search results"
        title = results[rank - 1]["title"]
        obs = await ep.act(toolbox, f"Result {rank}, \"{title}\", is about this. Let me read it.", "visit",
                           {"url": [subject_url], "goal": c.question})
        if not find_answer(c.answer, obs):
            return None, "the page's evidence does not state the answer"
        ep.answer(f"The page \"{title}\" says: \"{quote(obs, c.answer)}\". So the answer is {c.answer}.", c.answer)
    traj = Trajectory(question=c.question, messages=ep.messages, gold=c.answer, prediction=c.answer,
                      turns=len(ep.calls) + 1, tool_calls=ep.calls, finish_reason="answer", model=TEACHER,
                      source="teacher", qa_id=qa_id)
    return traj, "ok"


# ------------------------------------------------------------------ candidates
def _round_robin(items: list, key, n: int, rng: random.Random) -> list:
    """Up to `n` items, taking turns over `key` groups, so one plentiful relation (birth years) does not crowd out
    the others."""
    pools: dict[Any, list] = defaultdict(list)
    for item in items:
        pools[key(item)].append(item)
    for pool in pools.values():
        rng.shuffle(pool)
    out: list = []
    while len(out) < n and any(pools.values()):
        for k in sorted(pools):
            if pools[k] and len(out) < n:
                out.append(pools[k].pop())
    return out


def candidates(pages: list, per_level: int, seed: int = 0) -> list[Candidate]:
    """At most `per_level` candidate questions per level over the pages' facts (level 3: every creator chain)."""
    rng = random.Random(seed)
    facts = encyclopedia_facts(pages) + docs_facts(pages)
    by_url = {p.url: p for p in pages}
    out = [Candidate(1, question(f), f.answer, f.relation, f.subject_url, f.answer_url)
           for f in _round_robin(facts, lambda f: f.relation, per_level, rng)]
    level2 = 0
    for f in _round_robin([f for f in facts if f.subject_url in by_url], lambda f: f.relation, 4 * per_level, rng):
        desc = description(f, by_url[f.subject_url])
        q = question(f, desc) if desc else ""
        if not q or find_answer(f.answer, q) or page_name(by_url[f.subject_url]).lower() in q.lower():
            continue  # no description, or it gives the answer or the name away
        out.append(Candidate(2, q, f.answer, f.relation, f.subject_url, f.answer_url))
        level2 += 1
        if level2 >= per_level:
            break
    about: dict[str, list[Fact]] = defaultdict(list)
    for f in facts:
        about[f.subject_url].append(f)
    chains = [Candidate(3, chain_question(work, f), f.answer, f.relation, f.subject_url, f.answer_url,
                        (work.answer, f.subject_url, work.extra["role"]))
              for work in facts if work.relation == "creator" and work.extra.get("creator_url")
              for f in about[work.extra["creator_url"]] if f.relation in ("born", "died", "nobel")]
    rng.shuffle(chains)
    return out + chains[:per_level]


# ------------------------------------------------------------------ the split
def split_by_answer_page(qa: list[QAPair], quotas: dict[str, int], seed: int = 0) -> dict[str, list[QAPair]]:
    """{split: pairs}. Answer pages are taken in a seeded order; a page goes to the first split among
    `quotas` ("eval", "dev", "dapo": questions per level) that still needs one of its levels; the rest is "sft".
    All questions about one page land in one split, so no held-out answer page is a training answer page."""
    by_page: dict[str, list[QAPair]] = defaultdict(list)
    for q in qa:
        by_page[q.provenance["answer_page"]].append(q)
    order = sorted(by_page, key=lambda url: hashlib.sha1(f"{seed}:{url}".encode()).hexdigest())
    need = {split: {lv: n for lv in LEVELS} for split, n in quotas.items()}
    out: dict[str, list[QAPair]] = {split: [] for split in SPLITS}
    for url in order:
        levels = Counter(q.provenance["level"] for q in by_page[url])
        split = next((s for s in quotas if any(need[s][lv] > 0 for lv in levels)), "sft")
        for lv, n in levels.items():
            if split in need:
                need[split][lv] -= n
        out[split] += by_page[url]
    return out


def balanced(qa: list[QAPair], n: int | None) -> list[QAPair]:
    """The first `n` of `qa` taken round-robin over levels (order kept within a level): a plain prefix can miss a
    level entirely (the two-hop questions are few), and the SFT set must show every kind of episode."""
    if n is None or n >= len(qa):
        return qa
    by_level: dict[int, list[QAPair]] = defaultdict(list)
    for q in qa:
        by_level[q.provenance["level"]].append(q)
    queues = [by_level[lv] for lv in sorted(by_level)]
    picked: list[QAPair] = []
    while len(picked) < n:
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


# ------------------------------------------------------------------ the stage
async def graded_qa(cfg: Config, toolbox: Any, pages: list, *,
                    progress: bool = True) -> tuple[dict[str, list[QAPair]], list[Trajectory], dict[str, Any]]:
    """Candidates → teacher episodes (concurrent) → verified QA split by answer page. Returns ({split: QA}, the
    teacher trajectories of the SFT split, report). Per `cfg.synthesis.graded`."""
    g = cfg.synthesis.graded
    cands = candidates(pages, g.candidates_per_level, cfg.run.seed)
    semaphore = asyncio.Semaphore(g.concurrency)
    reasons: Counter = Counter()
    bar = tqdm(total=len(cands), desc="graded QA (teacher episodes)", disable=not progress)

    async def one(c: Candidate) -> tuple[QAPair, Trajectory] | None:
        qa = QAPair(question=c.question, answer=c.answer, source="graded", type=c.relation, difficulty=c.level,
                    evidence_urls=list(dict.fromkeys(u for u in (c.answer_url, c.subject_url) if u)),
                    provenance={"level": c.level, "generator": "facts", "answer_page": c.answer_url,
                                "bridge": c.bridge[0] if c.bridge else None})
        async with semaphore:
            traj, why = await teacher_episode(c, toolbox, prompt=cfg.agent.prompt, qa_id=qa.id)
        bar.update(1)
        reasons[(c.level, why)] += 1
        if traj is None:
            return None
        qa.provenance["path"] = traj.tool_calls  # the proof: the calls whose observations state the answer
        return qa, traj

    done = [r for r in await asyncio.gather(*(one(c) for c in cands)) if r is not None]
    bar.close()
    episode = {qa.id: traj for qa, traj in done}
    quotas = {"eval": g.eval_per_level, "dev": g.dev_per_level, "dapo": g.dapo_per_level}
    splits = split_by_answer_page([qa for qa, _ in done], quotas, cfg.run.seed)
    sft = splits["sft"] = balanced(splits["sft"], g.sft_questions)
    report = {"candidates": dict(Counter(f"level {c.level}" for c in cands)),
              "kept": dict(Counter(f"level {qa.provenance['level']}" for qa, _ in done)),
              "dropped": {f"level {lv}: {why}": n for (lv, why), n in sorted(reasons.items()) if why != "ok"},
              "splits": {s: dict(Counter(f"level {q.provenance['level']}" for q in qs)) for s, qs in splits.items()},
              "relations": dict(Counter(qa.type for qa, _ in done))}
    return splits, [episode[q.id] for q in sft], report

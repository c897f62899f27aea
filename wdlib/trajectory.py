"""Records: QA pairs and trajectories, JSONL I/O with append + resume by id, WebDancer-sample import.

Records are appended one per line as they are produced, so a killed stage resumes where it stopped:
`done_ids(path)` tells which ids are finished; a half-written last line (killed mid-write) is ignored. Ids are
content-derived (`stable_id`, `trajectory_id`), so a re-run finds its own earlier records.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

FINISH_REASONS = ("answer", "max_turns", "max_tokens", "error")


def stable_id(*parts: Any, n: int = 12) -> str:
    """Deterministic short id from content (same question → same id across runs)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:n]


def question_id(question: str) -> str:
    """The qa_id of a trajectory whose question has no QA pair id."""
    return stable_id(question)


def trajectory_id(qa_id: str, sample: int, model: str, source: str = "agent") -> str:
    """The id of sample `sample` of question `qa_id` by `model`: what a finished trajectory is recorded under."""
    return stable_id(qa_id, sample, source, model)


@dataclass
class QAPair:
    question: str
    answer: str
    source: str = "unknown"  # crawlqa | e2hqa | webdancer | webwalkerqa | gaia | ...
    type: str = ""  # COUNT | MULTI-HOP | INTERSECTION | e2hqa ...
    difficulty: int | str | None = None  # hops for E2HQA, level for GAIA, easy/medium/hard for WebWalkerQA
    evidence_urls: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)  # crawl paths, E2HQA hops, seed, teacher model...
    id: str = ""

    def __post_init__(self):
        if not self.id:
            self.id = stable_id(self.source, self.question)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QAPair":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Trajectory:
    question: str
    messages: list[dict[str, str]]  # ChatML: system, user, then assistant / user(<tool_response>) turns
    gold: str | None = None
    prediction: str | None = None
    turns: int = 0  # assistant turns
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "arguments"}] in order
    finish_reason: str = "answer"
    model: str = ""
    sampling: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # model_s, tool_s, total_s
    judge: dict[str, Any] = field(default_factory=dict)  # {"correct": bool|None, "method": ..., "raw": ...}
    filters: dict[str, Any] = field(default_factory=dict)  # {"validity": {...}, "kept": bool, "dropped_by": ...}
    source: str = "agent"  # agent | webdancer | ...
    qa_id: str = ""
    sample: int = 0  # index among the samples of one question
    id: str = ""
    usage: dict[str, int] = field(default_factory=dict)  # prompt/completion token counts
    error: str | None = None  # why the run failed when finish_reason == "error" (e.g. the model endpoint gave up)
    # Token-level transcript of an in-process rollout (prompt_ids, completion_ids, env_mask, logprobs).
    # Kept in memory for RL; not written to JSONL (large and model-specific).
    tokens: dict[str, list] | None = field(default=None, repr=False)

    def __post_init__(self):
        if not self.qa_id:
            self.qa_id = question_id(self.question)
        if not self.id:
            self.id = trajectory_id(self.qa_id, self.sample, self.model, self.source)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("tokens")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Trajectory":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    # -------------------------------------------------------------- views
    @property
    def assistant_turns(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == "assistant"]

    @property
    def observations(self) -> list[str]:
        return [m["content"] for m in self.messages[2:] if m["role"] == "user"]

    # -------------------------------------------------------------- import
    @classmethod
    def from_webdancer(cls, record: dict) -> "Trajectory":
        """One line of WebDancer's released `sample_traj.jsonl` (type chatml, task agent/multiturn_search)."""
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        if len(messages) < 3 or messages[0]["role"] != "system" or messages[1]["role"] != "user":
            raise ValueError("WebDancer trajectory must start with system and user messages")
        prompt = messages[1]["content"]
        question = prompt.rsplit("\nUser:", 1)[-1].strip() if "\nUser:" in prompt else prompt.strip()
        gold = _first_answer(record.get("answer"))
        calls = []
        for m in messages:
            if m["role"] == "assistant":
                for body in re.findall(r"<tool_call>(.*?)</tool_call>", m["content"], flags=re.S):
                    try:
                        call = json.loads(body.strip())
                        calls.append({"name": call.get("name"), "arguments": call.get("arguments")})
                    except json.JSONDecodeError:
                        calls.append({"name": None, "arguments": body.strip()})
        last = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
        match = re.search(r"<answer>(.*?)</answer>", last, flags=re.S)
        return cls(
            question=question,
            messages=messages,
            gold=gold,
            prediction=match.group(1).strip() if match else None,
            turns=sum(m["role"] == "assistant" for m in messages),
            tool_calls=calls,
            finish_reason="answer" if match else "error",
            model="webdancer-release",
            source="webdancer",
            judge={"correct": True, "method": "released"} if match else {},
        )


def _first_answer(answer: Any) -> str | None:
    while isinstance(answer, list) and answer:
        answer = answer[0]
    return None if answer in (None, []) else str(answer)


# ------------------------------------------------------------------ JSONL
def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Records of a JSONL file; a truncated last line (a killed writer) is skipped, not fatal."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def append_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Append records (dicts or objects with to_dict) and flush each line, so nothing finished is lost."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "a+b") as raw:  # a writer killed mid-line left a partial line: end it, or the next record joins it
        if raw.tell():
            raw.seek(-1, 2)
            if raw.read(1) != b"\n":
                raw.write(b"\n")
    with open(path, "a") as f:
        for r in records:
            d = r.to_dict() if hasattr(r, "to_dict") else r
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
            f.flush()
            n += 1
    return n


def write_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    n = append_jsonl(tmp, records)
    tmp.replace(path)
    return n


def done_ids(path: str | Path, key: str = "id") -> set[str]:
    return {r[key] for r in read_jsonl(path) if key in r}


def load_trajectories(path: str | Path) -> list[Trajectory]:
    return [Trajectory.from_dict(r) for r in read_jsonl(path)]


def load_qa(path: str | Path) -> list[QAPair]:
    return [QAPair.from_dict(r) for r in read_jsonl(path)]


def load_webdancer(path: str | Path) -> list[Trajectory]:
    return [Trajectory.from_webdancer(r) for r in read_jsonl(path)]


def load_sample_qa(path: str | Path) -> list[dict[str, str]]:
    """WebDancer's released `sample_qa.jsonl` (question, answer, tag): {"question", "answer", "tag", "line"} for each
    record with a question and an answer (a list answer gives its first item), in file order."""
    records = []
    for line, r in enumerate(read_jsonl(path), 1):
        answer = _first_answer(r.get("answer"))
        if r.get("question") and answer not in (None, ""):
            records.append({"question": r["question"], "answer": answer, "tag": r.get("tag"), "line": line})
    return records

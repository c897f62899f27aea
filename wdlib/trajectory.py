"""Records: QA pairs and trajectories, JSONL I/O with append + resume by id, WebDancer-sample import.

Records are appended one per line as they are produced, so a killed stage resumes where it stopped:
`done_ids(path)` tells which ids are finished; a half-written last line (killed mid-write) is ignored. Ids are
content-derived (`stable_id`, `trajectory_id`), so a re-run finds its own earlier records.

One writer that can always write (`append_jsonl`: lone surrogates, non-JSON values, any nesting; key values
redacted, `wdlib.redact`) and one reader that never fails on content (`read_jsonl`: cut or invalid UTF-8, lines
that are not JSON objects); loaders skip records of the wrong shape and say how many.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from wdlib.redact import redact, secrets

log = logging.getLogger(__name__)
FINISH_REASONS = ("answer", "max_turns", "max_tokens", "format_errors", "error")


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
        _check_shape(d, {"question": str, "answer": (str, int, float)}, {"id": str, "source": str, "type": str,
                                                                        "evidence_urls": list, "provenance": dict})
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
        _check_shape(d, {"question": str, "messages": list}, _TRAJECTORY_FIELDS)
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                   for m in d["messages"]):
            raise ValueError("messages must be {role, content} objects with text content")
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
                    except (ValueError, RecursionError, AttributeError):  # not a JSON object json can read
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


_TRAJECTORY_FIELDS = {"id": str, "qa_id": str, "model": str, "source": str, "finish_reason": str, "gold": str,
                      "prediction": str, "error": str, "sample": int, "turns": int, "tool_calls": list,
                      "sampling": dict, "timings": dict, "judge": dict, "filters": dict, "usage": dict}


def _check_shape(d: Any, required: dict, optional: dict) -> None:
    """ValueError unless `d` is an object with the required fields and every field present of the type given (an
    optional field may be null)."""
    if not isinstance(d, dict):
        raise ValueError(f"a record must be a JSON object, not {type(d).__name__}")
    for name, kind in required.items():
        if not isinstance(d.get(name), kind) or isinstance(d.get(name), bool):
            raise ValueError(f"field {name!r} missing or of the wrong type")
    for name, kind in optional.items():
        if d.get(name) is not None and not isinstance(d[name], kind):
            raise ValueError(f"field {name!r} of the wrong type")


def _first_answer(answer: Any) -> str | None:
    while isinstance(answer, list) and answer:
        answer = answer[0]
    return None if answer in (None, []) else str(answer)


# ------------------------------------------------------------------ JSONL
MAX_DEPTH = 64  # deeper values are written as a note: no reader's (or json's) stack should depend on a record


def _plain(obj: Any, known: list[str], depth: int = 0) -> Any:
    """`obj` as values JSON can hold, whatever it is: strings redacted, other types as their text, nothing nested
    deeper than MAX_DEPTH."""
    if isinstance(obj, str):
        return redact(obj, known)
    if obj is None or isinstance(obj, (bool, float)):
        return obj
    if isinstance(obj, int):
        return obj if obj.bit_length() < 10_000 else f"<integer of {obj.bit_length()} bits>"
    if depth >= MAX_DEPTH:
        return "<nested too deeply>"
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else str(k)): _plain(v, known, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, known, depth + 1) for v in obj]
    try:
        return redact(str(obj), known)
    except Exception:
        return f"<{type(obj).__name__}>"


def json_line(record: Any, known: list[str] | None = None) -> bytes:
    """One record (a dict or an object with to_dict) as a UTF-8 JSONL line. Never fails: a lone surrogate (which
    UTF-8 cannot encode) is written as its JSON escape (\\udXXX), and reads back as itself."""
    d = record.to_dict() if hasattr(record, "to_dict") else record
    text = json.dumps(_plain(d, secrets() if known is None else known), ensure_ascii=False)
    return (text + "\n").encode("utf-8", "backslashreplace")


def _loads(line: str) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):  # not JSON, a cut line, an integer over 4,300 digits, nesting too deep
        return None


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """The records (JSON objects) of a JSONL file. Never fails on content: a line cut by a killed writer (also in
    the middle of a multi-byte character) or one that is not a JSON object (`42`, `null`, `[1]`) is skipped and
    counted in a warning; invalid UTF-8 inside a record reads as U+FFFD."""
    path = Path(path)
    if not path.is_file():
        return
    skipped = 0
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            record = _loads(line)
            if isinstance(record, dict):
                yield record
            else:
                skipped += 1
    if skipped:
        log.warning("%s: skipped %d line(s) that are not JSON records (e.g. cut by a killed writer)", path, skipped)


def append_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Append records, one line each, flushed as written so nothing finished is lost (`json_line`: any record can
    be written, key values redacted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    known, n = secrets(), 0
    with open(path, "a+b") as f:
        if f.tell():  # a writer killed mid-line left a partial line: end it, or the next record joins it
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.write(b"\n")
        for r in records:
            f.write(json_line(r, known))
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
    """The `key` values (ids) of the records in `path`; a record whose `key` is not a string does not count."""
    return {r[key] for r in read_jsonl(path) if isinstance(r.get(key), str)}


def _load(path: str | Path, make) -> list:
    """`make(record)` for each record of the right shape; the others are skipped and counted in a warning."""
    out, bad = [], 0
    for r in read_jsonl(path):
        try:
            out.append(make(r))
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError):
            bad += 1
    if bad:
        log.warning("%s: skipped %d record(s) of the wrong shape for %s", path, bad, getattr(make, "__qualname__", ""))
    return out


def load_trajectories(path: str | Path) -> list[Trajectory]:
    return _load(path, Trajectory.from_dict)


def load_qa(path: str | Path) -> list[QAPair]:
    return _load(path, QAPair.from_dict)


def load_webdancer(path: str | Path) -> list[Trajectory]:
    return _load(path, Trajectory.from_webdancer)


def load_sample_qa(path: str | Path) -> list[dict[str, str]]:
    """WebDancer's released `sample_qa.jsonl` (question, answer, tag): {"question", "answer", "tag", "line"} for each
    record with a question and an answer (a list answer gives its first item), in file order."""
    records = []
    for line, r in enumerate(read_jsonl(path), 1):
        answer = _first_answer(r.get("answer"))
        if isinstance(r.get("question"), str) and r["question"] and answer not in (None, ""):
            records.append({"question": r["question"], "answer": answer, "tag": r.get("tag"), "line": line})
    return records

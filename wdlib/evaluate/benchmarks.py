"""Evaluation benchmarks: GAIA (text-only validation questions, levels 1/2/3), WebWalkerQA (680 test questions,
easy/medium/hard), the local-web set (the run's held-out synthesized QA) and any QA file (`load_qa_file`), as
QAPairs with their levels; `eval.limit` takes the first questions evenly across levels.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from wdlib.config import SAMPLE_QA, Config
from wdlib.trajectory import QAPair, load_sample_qa, read_jsonl

log = logging.getLogger(__name__)

BENCHMARKS = ("gaia", "webwalkerqa", "local")
GAIA_LEVELS = ("1", "2", "3")
WEBWALKERQA_LEVELS = ("easy", "medium", "hard")
GAIA_HUB_ID = "gaia-benchmark/GAIA"  # gated: accept the terms on the hub, then HF_TOKEN
WEBWALKERQA_HUB_ID = "callanwu/WebWalkerQA"  # split "main" = the 680-question test set


class BenchmarkError(RuntimeError):
    """A benchmark that cannot be loaded; the message says why and what to do."""


# ================================================================== benchmarks
@dataclass
class Benchmark:
    name: str
    items: list[QAPair]  # difficulty holds the level as a string
    levels: list[str]  # column order for tables
    note: str = ""  # e.g. "fallback: ..." when the local set is not the run's own
    group_by: str | None = None  # a QAPair field to break results down by (WebWalkerQA: type, single/multi-source)

    def level_counts(self) -> dict[str, int]:
        counts = {level: 0 for level in self.levels}
        for qa in self.items:
            counts[str(qa.difficulty)] = counts.get(str(qa.difficulty), 0) + 1
        return counts


def _pick(row: dict, *names: str, default: Any = None) -> Any:
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    return default


def _read_records(path: Path) -> list[dict]:
    """Rows of a .jsonl, .json (a list, or {"data": [...]}) or .parquet file; a malformed file is a clear error."""
    if not path.is_file():
        raise BenchmarkError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except (ValueError, RecursionError) as exc:  # not JSON, or nested too deep to read
                    raise BenchmarkError(f"{path}:{n}: not valid JSON: {exc}") from None
        return rows
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BenchmarkError(f"{path}: not valid JSON: {exc}") from None
    if isinstance(data, dict):
        data = data.get("data", data.get("rows"))
    if not isinstance(data, list):
        raise BenchmarkError(f"{path}: expected a JSON list of records")
    return data


# ------------------------------------------------------------------ GAIA
def _gaia_metadata_file(path: Path) -> Path:
    """A GAIA file, or the metadata file inside a folder (the hub snapshot keeps 2023/validation/metadata.jsonl)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise BenchmarkError(f"GAIA: {path} does not exist (eval.gaia_path)")
    found = sorted(p for p in path.rglob("metadata.*") if p.suffix in (".jsonl", ".parquet", ".json"))
    validation = [p for p in found if "validation" in p.parts] or [p for p in found if "test" not in p.parts]
    if not validation:
        raise BenchmarkError(f"GAIA: no metadata.jsonl/.parquet of the validation split under {path}")
    return validation[0]


def _gaia_from_hub() -> Path:
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        folder = snapshot_download(GAIA_HUB_ID, repo_type="dataset", allow_patterns=["2023/validation/metadata*"],
                                   token=os.environ.get("HF_TOKEN") or None, local_files_only=offline)
    except Exception as exc:  # gated, offline, no token: all end here with one instruction
        how = ("HF_HUB_OFFLINE=1 and no cached copy" if offline else
               "accept the dataset's terms on huggingface.co and export HF_TOKEN")
        raise BenchmarkError(f"GAIA ({GAIA_HUB_ID}) is gated and could not be loaded ({type(exc).__name__}): "
                             f"{how}, or set eval.gaia_path to a local copy of the validation split") from None
    return Path(folder) / "2023" / "validation"


def _read_task_ids(path: Path) -> set[str]:
    """Task ids, one per line, or a JSON list of ids / of records with `task_id` (e.g. a copy of WebThinker's list)."""
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("["):
        data = json.loads(text)
        return {str(d if isinstance(d, str) else _pick(d, "task_id", "id")) for d in data}
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


def load_gaia(path: str | Path | None = None, *, text_only: bool = True,
              task_ids: str | Path | Iterable[str] | None = None) -> list[QAPair]:
    """GAIA validation questions as QAPairs (id = task_id, difficulty = level "1"/"2"/"3").

    `path`: a metadata.jsonl/.parquet/.json file or a folder holding one; None → the hub (gated; needs HF_TOKEN,
    honours HF_HUB_OFFLINE). Never shipped with the repo. `text_only` drops questions with an attached file (127 of
    the 165 validation questions remain); the paper's 103-question text-only set is a further curated subset
    (WebThinker's list): pass its task ids as `task_ids` to get exactly it.
    """
    source = _gaia_metadata_file(Path(path)) if path is not None else _gaia_metadata_file(_gaia_from_hub())
    keep = None
    if task_ids is not None:
        keep = _read_task_ids(Path(task_ids)) if isinstance(task_ids, (str, Path)) else {str(t) for t in task_ids}
    items = []
    for n, row in enumerate(_read_records(source), 1):
        question, answer = _pick(row, "Question", "question"), _pick(row, "Final answer", "answer", "Final_answer")
        level, task_id = _pick(row, "Level", "level"), _pick(row, "task_id", "id")
        if question is None or answer is None or level is None:
            raise BenchmarkError(f"{source}: record {n} lacks Question / Final answer / Level")
        if text_only and str(_pick(row, "file_name", default="")).strip():
            continue
        if keep is not None and str(task_id) not in keep:
            continue
        items.append(QAPair(
            question=str(question), answer=str(answer), source="gaia", type="gaia", difficulty=str(level).strip(),
            provenance={"task_id": task_id, "file_name": _pick(row, "file_name", default=""),
                        "annotator_metadata": _pick(row, "Annotator Metadata", default={}), "source_file": str(source)},
            id=f"gaia-{task_id}" if task_id else ""))
    if not items:
        raise BenchmarkError(f"GAIA: no questions left from {source} (text_only={text_only}, task_ids={task_ids})")
    return items


# ------------------------------------------------------------------ WebWalkerQA
def _webwalkerqa_from_hub() -> list[dict]:
    import datasets

    try:
        return list(datasets.load_dataset(WEBWALKERQA_HUB_ID, split="main"))
    except Exception as exc:
        raise BenchmarkError(f"WebWalkerQA ({WEBWALKERQA_HUB_ID}) could not be loaded ({type(exc).__name__}: {exc}); "
                             "set eval.webwalkerqa_path to a local test.json") from None


def load_webwalkerqa(path: str | Path | None = None) -> list[QAPair]:
    """WebWalkerQA test questions (680: easy 160, medium 280, hard 240); difficulty = difficulty_level.

    `path`: a local JSON/JSONL file with the dataset's fields (Question, answer, root_url, type, difficulty_level,
    domain, lang, source_website, golden_path); None → the hub (split "main").
    """
    rows = _read_records(Path(path)) if path is not None else _webwalkerqa_from_hub()
    items = []
    for n, row in enumerate(rows, 1):
        question, answer, level = _pick(row, "Question", "question"), _pick(row, "answer"), row.get("difficulty_level")
        if question is None or answer is None or level is None:
            raise BenchmarkError(f"WebWalkerQA {path or WEBWALKERQA_HUB_ID}: record {n} lacks Question / answer / "
                                 "difficulty_level")
        items.append(QAPair(
            question=str(question), answer=str(answer), source="webwalkerqa", type=str(row.get("type", "")),
            difficulty=str(level).strip().lower(), evidence_urls=list(row.get("source_website") or []),
            provenance={k: row.get(k) for k in ("root_url", "domain", "lang", "golden_path")}))
    return items


# ------------------------------------------------------------------ local web
def local_level(qa: QAPair) -> str:
    """The local set's level: the graded QA's level ("1", "2", "3", shown as Level 1/2/3) when the pair carries one
    (`provenance["level"]`, or a `level` key in its JSONL record), else the E2HQA hop count ("2 hops"), else the QA
    type (COUNT, MULTI-HOP...)."""
    if qa.provenance.get("level") not in (None, ""):
        return str(qa.provenance["level"]).strip()
    if isinstance(qa.difficulty, int) or (isinstance(qa.difficulty, str) and qa.difficulty.isdigit()):
        hops = int(qa.difficulty)
        return f"{hops} hop" + ("s" if hops != 1 else "")
    return str(qa.difficulty or qa.type or qa.source or "all")


def load_local(cfg: Config) -> tuple[list[QAPair], str]:
    """The run's held-out synthesized QA (`cfg.paths.qa_eval`, written by notebook 01; or eval.local_path).

    If it is missing or empty, falls back to a fixed slice of WebDancer's released sample QA (every 10th pair, 20
    questions), marked as such in each pair's provenance and in the returned note — so the stage still runs.
    """
    path = cfg.resolve_path(cfg.eval.local_path) if cfg.eval.local_path else cfg.paths.qa_eval
    rows = list(read_jsonl(path))
    if rows:
        items = [QAPair.from_dict(r) for r in rows]
        for qa, row in zip(items, rows):
            if row.get("level") not in (None, "") and "level" not in qa.provenance:
                qa.provenance = {**qa.provenance, "level": row["level"]}
        note = ""
    else:
        fallback = cfg.resolve_path(SAMPLE_QA)
        if not fallback.is_file():
            raise BenchmarkError(f"local set: {path} is missing and so is the fallback {fallback}")
        items = [QAPair(question=r["question"], answer=r["answer"], source="webdancer-sample", type=r["tag"] or "",
                        provenance={"fallback": True, "file": str(fallback), "line": r["line"]})
                 for i, r in enumerate(load_sample_qa(fallback)) if i % 10 == 9]
        note = (f"fallback: {path} not found or empty (run notebook 01 first); using every 10th pair of WebDancer's "
                f"sample_qa.jsonl ({len(items)} questions, real-web questions: few are answerable offline)")
        log.warning("local eval set: %s", note)
    for qa in items:
        qa.difficulty = local_level(qa)
    return items, note


# ------------------------------------------------------------------ selection
def take_evenly(items: Sequence[QAPair], limit: int | None, levels: Sequence[str] = ()) -> list[QAPair]:
    """The first `limit` items taken round-robin across levels (file order within a level), so a small limit still
    covers every level; deterministic. None → all."""
    if limit is None or limit >= len(items):
        return list(items)
    by_level: dict[str, list[QAPair]] = {}
    for qa in items:
        by_level.setdefault(str(qa.difficulty), []).append(qa)
    order = [lv for lv in levels if lv in by_level] + [lv for lv in by_level if lv not in levels]
    chosen: list[QAPair] = []
    while len(chosen) < limit:
        for level in order:
            if by_level[level] and len(chosen) < limit:
                chosen.append(by_level[level].pop(0))
    return chosen


def load_benchmark(name: str, cfg: Config) -> Benchmark:
    ecfg = cfg.eval
    note, group_by = "", None
    if name == "gaia":
        task_ids = cfg.resolve_path(ecfg.gaia_task_ids) if ecfg.gaia_task_ids else None
        items = load_gaia(cfg.resolve_path(ecfg.gaia_path), text_only=ecfg.gaia_text_only, task_ids=task_ids)
        levels = list(GAIA_LEVELS)
        if len(items) != 103:
            note = (f"{len(items)} GAIA questions, not the paper's 103 (set eval.gaia_task_ids to the 103-question "
                    "text-only list to match it)")
    elif name == "webwalkerqa":
        items = load_webwalkerqa(cfg.resolve_path(ecfg.webwalkerqa_path))
        levels = list(WEBWALKERQA_LEVELS)
        group_by = "type"  # single_source / multi_source, as WebWalkerQA's own evaluation reports
    elif name == "local":
        items, note = load_local(cfg)
        levels = sorted({str(qa.difficulty) for qa in items})
    else:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {BENCHMARKS}")
    items = take_evenly(items, ecfg.limit, levels)
    present = {str(qa.difficulty) for qa in items}
    levels = [lv for lv in levels if lv in present] + sorted(present - set(levels))
    return Benchmark(name, items, levels, note, group_by)


def judge_mode(cfg: Config, benchmark: str) -> str:
    """The judge mode of a benchmark: `eval.judge[benchmark]`, else `judge.mode`."""
    return cfg.eval.judge.get(benchmark, cfg.judge.mode)


def load_qa_file(path: str | Path, name: str | None = None) -> Benchmark:
    """Any QA file as a benchmark: a .json list or .jsonl of records with `question`, `answer` and an optional `level`
    (or `difficulty`); the benchmark is named after the file unless `name` is given. Levels are the records' own."""
    path = Path(path)
    items = []
    for n, row in enumerate(_read_records(path), 1):
        question, answer = _pick(row, "question", "Question"), _pick(row, "answer", "Final answer")
        if not isinstance(question, str) or not question.strip() or answer is None or not str(answer).strip():
            raise BenchmarkError(f"{path}: record {n} needs a non-empty `question` and `answer`")
        level = _pick(row, "level", "difficulty", default="all")
        items.append(QAPair(question=question.strip(), answer=str(answer).strip(), source=path.stem,
                            type=str(row.get("type", "")), difficulty=str(level),
                            provenance={"file": str(path), "line": n}))
    if not items:
        raise BenchmarkError(f"{path}: no questions")
    return Benchmark(name or re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem), items,
                     sorted({str(q.difficulty) for q in items}))


def load_benchmarks(cfg: Config) -> tuple[dict[str, Benchmark], dict[str, str]]:
    """The benchmarks of `eval.benchmarks`; one that cannot be loaded is skipped with its reason (second value)."""
    loaded, skipped = {}, {}
    for name in cfg.eval.benchmarks:
        try:
            loaded[name] = load_benchmark(name, cfg)
        except BenchmarkError as exc:
            log.warning("skipping %s: %s", name, exc)
            skipped[name] = str(exc)
    return loaded, skipped

"""Evaluation: GAIA, WebWalkerQA and the local-web set; Pass@1, Pass@k, Cons@k; tables in the paper's shape.

Flow (notebook 05): `load_benchmarks(cfg)` → `eval_models(cfg)` → `run_evaluation(cfg, benchmarks, models)` →
`summarize(...)` → `paper_table(summary)` / `write_tables` / `write_drilldown(...)`; the bar charts of the summary
are `wdlib.plots.eval_scores` and `eval_behaviour`.

Files under the run folder (every run resumable: a finished trajectory is appended with its verdict at once):
  eval/<benchmark>/<model>/run<r>.jsonl   one Trajectory per question and run, plus {"eval": {...}} and its `judge`
  eval/summary.json                       metrics per benchmark × model × level (+ the paper's published rows)
  eval/tables.md                          Pass@1 (with the published rows), Pass@k, Cons@k, behaviour
  eval/figures/                           bar charts, drill-down pages, trajectory-viewer pages

Metrics, over k independent runs per question (k = `eval.runs`, 3 in the paper):
  Pass@1  mean over the k runs of the run's accuracy (each run is one Pass@1 measurement; we average them).
  Pass@k  fraction of questions answered correctly in at least one of the k runs.
  Cons@k  the paper's definition (WebDancer §5, "Detailed Results"): a question scores (#correct runs)/k — one right
          answer out of three gives 1/3, two give 2/3, three give 1 — averaged over questions. Arithmetically this
          is the same number as the run-averaged Pass@1 above (a missing or unjudged run counts as wrong in both);
          we report it under the paper's name. Works that call the single best run "Pass@1" can read best_pass@1.
  Also: best single-run Pass@1, each run's Pass@1, all@k (right in every run), invalid-output rate (trajectory ended
  without an answer: max turns, max tokens, error), average turns and tool calls per trajectory.
Levels: GAIA 1/2/3, WebWalkerQA easy/medium/hard, local web: the QA pair's difficulty (E2HQA hops) or type.
"Avg." is over all questions (micro average), as in the paper's Table 1.
"""

from __future__ import annotations

import asyncio
import gc
import html
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .config import Config, ModelSpec
from .trajectory import QAPair, append_jsonl, read_jsonl, write_jsonl

log = logging.getLogger(__name__)

BENCHMARKS = ("gaia", "webwalkerqa", "local")
BENCHMARK_TITLES = {"gaia": "GAIA", "webwalkerqa": "WebWalkerQA", "local": "Local web"}
GAIA_LEVELS = ("1", "2", "3")
WEBWALKERQA_LEVELS = ("easy", "medium", "hard")
LEVEL_TITLES = {"1": "Level 1", "2": "Level 2", "3": "Level 3", "easy": "Easy", "medium": "Medium", "hard": "Hard"}
STAGES = ("base", "sft", "dapo")
STAGE_TITLES = {"base": "ReAct (base)", "sft": "SFT", "dapo": "SFT+DAPO (WebDancer)"}
GAIA_HUB_ID = "gaia-benchmark/GAIA"  # gated: accept the terms on the hub, then HF_TOKEN
WEBWALKERQA_HUB_ID = "callanwu/WebWalkerQA"  # split "main" = the 680-question test set
FALLBACK_LOCAL_QA = "../shared/data/webdancer-samples/sample_qa.jsonl"


class BenchmarkError(RuntimeError):
    """A benchmark that cannot be loaded; the message says why and what to do."""


# ================================================================== benchmarks
@dataclass
class Benchmark:
    name: str
    items: list[QAPair]  # difficulty holds the level as a string
    levels: list[str]  # column order for tables
    note: str = ""  # e.g. "fallback: ..." when the local set is not the run's own

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
                except json.JSONDecodeError as exc:
                    raise BenchmarkError(f"{path}:{n}: not valid JSON: {exc}") from None
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
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
    """The local set's level: E2HQA hop count ("2 hops") when known, else the QA type (COUNT, MULTI-HOP...)."""
    if isinstance(qa.difficulty, int) or (isinstance(qa.difficulty, str) and qa.difficulty.isdigit()):
        hops = int(qa.difficulty)
        return f"{hops} hop" + ("s" if hops != 1 else "")
    return str(qa.difficulty or qa.type or qa.source or "all")


def load_local(cfg: Config) -> tuple[list[QAPair], str]:
    """The run's held-out synthesized QA (`<run_dir>/qa_eval.jsonl`, written by notebook 01; or eval.local_path).

    If it is missing or empty, falls back to a fixed slice of WebDancer's released sample QA (every 10th pair, 20
    questions), marked as such in each pair's provenance and in the returned note — so the stage still runs.
    """
    path = cfg.resolve_path(cfg.eval.local_path) if cfg.eval.local_path else cfg.run_dir / "qa_eval.jsonl"
    rows = list(read_jsonl(path))
    if rows:
        items = [QAPair.from_dict(r) for r in rows]
        note = ""
    else:
        fallback = cfg.resolve_path(FALLBACK_LOCAL_QA)
        if not fallback.is_file():
            raise BenchmarkError(f"local set: {path} is missing and so is the fallback {fallback}")
        sample = list(read_jsonl(fallback))
        items = [QAPair(question=r["question"], answer=str(r["answer"]), source="webdancer-sample",
                        type=str(r.get("tag", "")),
                        provenance={"fallback": True, "file": str(fallback), "line": i + 1})
                 for i, r in enumerate(sample) if i % 10 == 9]
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
    note = ""
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
    elif name == "local":
        items, note = load_local(cfg)
        levels = sorted({str(qa.difficulty) for qa in items})
    else:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {BENCHMARKS}")
    items = take_evenly(items, ecfg.limit, levels)
    present = {str(qa.difficulty) for qa in items}
    levels = [lv for lv in levels if lv in present] + sorted(present - set(levels))
    return Benchmark(name, items, levels, note)


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


# ================================================================== models
def checkpoint_dir(cfg: Config, stage: str) -> Path:
    """Where the run's SFT / DAPO checkpoint lives (the SFT module's own answer when it is importable)."""
    if stage == "sft":
        try:
            from .sft import checkpoint_path

            return Path(checkpoint_path(cfg))
        except ImportError:
            pass
    return cfg.run_dir / "checkpoints" / stage


def _is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def eval_models(cfg: Config) -> tuple[dict[str, ModelSpec], dict[str, str]]:
    """label → ModelSpec for `eval.checkpoints` (base = models.policy; sft/dapo = the run's checkpoints, when they
    exist) plus `eval.extra_models`; the second value says why a requested checkpoint is skipped."""
    models: dict[str, ModelSpec] = {}
    skipped: dict[str, str] = {}
    policy = cfg.models.policy
    for stage in cfg.eval.checkpoints:
        if stage == "base":
            models["base"] = policy
            continue
        path = checkpoint_dir(cfg, stage) if stage in STAGES else cfg.resolve_path(stage)
        label = stage if stage in STAGES else _safe_label(Path(stage).name)
        if _is_checkpoint(path):
            # A checkpoint is served like the policy (same backend, dtype, limits), from its folder.
            models[label] = policy.model_copy(update={"name": str(path)})
        else:
            skipped[label] = f"no checkpoint at {path} (run notebook {'03' if stage == 'sft' else '04'} first)"
    for label, spec in cfg.eval.extra_models.items():
        models[_safe_label(label)] = spec
    return models, skipped


def _safe_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("_") or "model"


# ================================================================== runs
def run_file(cfg: Config, benchmark: str, label: str, run: int) -> Path:
    return cfg.run_dir / "eval" / benchmark / label / f"run{run}.jsonl"


async def verdict(benchmark: str, qa: QAPair, prediction: str | None, cfg: Config,
                  judge_client: Any = None) -> dict[str, Any]:
    """Judge one answer per params: GAIA under `judge.mode: rules` uses the official GAIA scorer alone; everything
    else goes through `wdlib.judge.judge_answer` (LLM judge, or rules = GAIA match or F1 ≥ threshold)."""
    from .judge import gaia_match, judge_answer

    if benchmark == "gaia" and cfg.judge.mode == "rules":
        if prediction is None or not str(prediction).strip():
            return {"correct": False, "method": "no-answer", "raw": None}
        return {"correct": gaia_match(prediction, qa.answer), "method": "gaia-scorer", "raw": None}
    return await judge_answer(qa.question, qa.answer, prediction, cfg, judge_client)


async def _judge_pending(path: Path, benchmark: str, by_id: dict[str, QAPair], cfg: Config, judge_client: Any) -> int:
    """Re-judge saved trajectories whose verdict is missing (the judge was down): no agent re-run needed."""
    records = list(read_jsonl(path))
    pending = [r for r in records if r.get("judge", {}).get("correct") is None and r.get("qa_id") in by_id]
    if not pending:
        return 0
    for r in pending:
        try:
            r["judge"] = await verdict(benchmark, by_id[r["qa_id"]], r.get("prediction"), cfg, judge_client)
        except Exception as exc:
            r["judge"] = {"correct": None, "method": "error", "raw": f"{type(exc).__name__}: {exc}"}
    write_jsonl(path, records)
    return len(pending)


def done_qa_ids(path: Path) -> set[str]:
    return {r["qa_id"] for r in read_jsonl(path) if "qa_id" in r}


async def evaluate_model(label: str, client: Any, toolbox: Any, benchmark: Benchmark, cfg: Config, *,
                         judge_client: Any = None, context_length: int | None = None,
                         progress: bool = True) -> dict[str, int]:
    """Run the agent k times (eval.runs) over the benchmark with one model; resumable per run file.

    The k runs are independent samples, so all (question, run) pairs go out together, `eval.concurrency` at a time
    (an in-process model batches them). Each finished trajectory is judged and appended at once to
    eval/<benchmark>/<label>/run<r>.jsonl; a re-run skips the questions already there. A trajectory whose agent call
    raised is not written (so it is retried next time). Returns counts {"new", "skipped", "failed", "rejudged"}.
    """
    from tqdm.auto import tqdm

    from .agent import run_agent

    ecfg = cfg.eval
    by_id = {qa.id: qa for qa in benchmark.items}
    sampling = {"temperature": ecfg.temperature, "top_p": ecfg.top_p}
    if ecfg.repetition_penalty != 1.0:  # sent only when set: not every endpoint accepts the parameter
        sampling["repetition_penalty"] = ecfg.repetition_penalty
    context_length = context_length or cfg.models.policy.context_length  # of the model evaluated (its spec)
    max_total_tokens = ecfg.max_total_tokens or context_length
    counts = {"new": 0, "skipped": 0, "failed": 0, "rejudged": 0}
    jobs: list[tuple[QAPair, int]] = []
    for run in range(ecfg.runs):
        path = run_file(cfg, benchmark.name, label, run)
        counts["rejudged"] += await _judge_pending(path, benchmark.name, by_id, cfg, judge_client)
        done = done_qa_ids(path)
        jobs += [(qa, run) for qa in benchmark.items if qa.id not in done]
    counts["skipped"] = len(benchmark.items) * ecfg.runs - len(jobs)
    if not jobs:
        return counts
    limit = asyncio.Semaphore(ecfg.concurrency)
    bar = tqdm(total=len(jobs), desc=f"{benchmark.name}/{label} ({ecfg.runs} runs)", disable=not progress)

    async def one(qa: QAPair, run: int) -> None:
        async with limit:
            try:
                traj = await run_agent(qa.question, client, toolbox, gold=qa.answer, qa_id=qa.id,
                                       max_turns=ecfg.max_turns, max_total_tokens=max_total_tokens,
                                       context_length=context_length, sampling=sampling, sample=run)
            except Exception as exc:  # the agent should not raise; if it does, retry on the next call
                log.warning("%s/%s run %d: %s failed: %s: %s", benchmark.name, label, run, qa.id,
                            type(exc).__name__, exc)
                counts["failed"] += 1
                return
            finally:
                bar.update(1)
        try:
            traj.judge = await verdict(benchmark.name, qa, traj.prediction, cfg, judge_client)
        except Exception as exc:  # keep the trajectory; _judge_pending retries the verdict later
            traj.judge = {"correct": None, "method": "error", "raw": f"{type(exc).__name__}: {exc}"}
        record = traj.to_dict()
        record["eval"] = {"benchmark": benchmark.name, "model": label, "run": run, "level": str(qa.difficulty)}
        append_jsonl(run_file(cfg, benchmark.name, label, run), [record])
        counts["new"] += 1

    try:
        await asyncio.gather(*(one(qa, run) for qa, run in jobs))
    finally:
        bar.close()
    return counts


def _runs_complete(cfg: Config, benchmarks: dict[str, Benchmark], label: str) -> bool:
    for bench in benchmarks.values():
        ids = {qa.id for qa in bench.items}
        for run in range(cfg.eval.runs):
            if not ids <= done_qa_ids(run_file(cfg, bench.name, label, run)):
                return False
    return True


async def _close(client: Any) -> None:
    """Let a client release what it holds (HTTP pools, batching tasks), if it knows how."""
    close = getattr(client, "aclose", None) or getattr(client, "close", None)
    if callable(close):
        try:
            result = close()
            if asyncio.iscoroutine(result):
                await result
        except Exception as exc:
            log.debug("closing client: %s", exc)


def _free_memory() -> None:
    """Free a model's weights between evaluations (after the last reference to its client is gone)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


async def _evaluate_all(cfg: Config, benchmarks: dict[str, Benchmark], models: dict[str, ModelSpec],
                        device: str, progress: bool) -> dict[str, dict[str, dict[str, int]]]:
    from . import llm
    from .tools import Toolbox

    report: dict[str, dict[str, dict[str, int]]] = {}
    todo = {}
    for label, spec in models.items():
        if _runs_complete(cfg, benchmarks, label):  # resume without loading the model
            report[label] = {b: {"new": 0, "skipped": len(bm.items) * cfg.eval.runs} for b, bm in benchmarks.items()}
        else:
            todo[label] = spec
    if not todo:
        return report
    judge_client = (llm.make_client(cfg.models.judge) if cfg.judge.mode == "llm" and cfg.models.judge else None)
    with Toolbox.from_config(cfg) as toolbox:
        for label, spec in todo.items():
            t0 = time.time()
            client = llm.make_client(spec, device=device)
            try:
                report[label] = {}
                for name, bench in benchmarks.items():
                    report[label][name] = await evaluate_model(label, client, toolbox, bench, cfg,
                                                               judge_client=judge_client,
                                                               context_length=spec.context_length, progress=progress)
            finally:
                await _close(client)
                del client
                _free_memory()
            log.info("evaluated %s in %.0f s", label, time.time() - t0)
    return report


def run_evaluation(cfg: Config, benchmarks: dict[str, Benchmark], models: dict[str, ModelSpec], *,
                   progress: bool = True) -> dict[str, dict[str, dict[str, int]]]:
    """Evaluate every model on every benchmark, k runs each; one model in memory at a time. Sync (Jupyter-safe)."""
    from .aio import run_sync
    from .models import pick_device

    device = pick_device(cfg.run.device)
    return run_sync(_evaluate_all(cfg, benchmarks, models, device, progress))


# ================================================================== metrics
Matrix = Sequence[Sequence[bool | None]]  # rows = questions, columns = runs; None = run missing or unjudged


def _k(rows: Matrix, k: int | None) -> int:
    return k if k is not None else max((len(r) for r in rows), default=0)


def run_accuracies(rows: Matrix, k: int | None = None) -> list[float]:
    """Pass@1 of each run (a missing/unjudged cell counts as wrong)."""
    k = _k(rows, k)
    if not rows or not k:
        return []
    return [sum(bool(r[j]) if j < len(r) else False for r in rows) / len(rows) for j in range(k)]


def pass_at_1(rows: Matrix, k: int | None = None) -> float:
    """Mean over the k runs of each run's accuracy."""
    accs = run_accuracies(rows, k)
    return sum(accs) / len(accs) if accs else math.nan


def pass_at_k(rows: Matrix) -> float:
    """Fraction of questions with at least one correct run."""
    return sum(any(bool(c) for c in r) for r in rows) / len(rows) if rows else math.nan


def cons_at_k(rows: Matrix, k: int | None = None) -> float:
    """WebDancer's Cons@k: each question scores (#correct runs)/k (1/3, 2/3, 1 for k=3), averaged over questions."""
    k = _k(rows, k)
    if not rows or not k:
        return math.nan
    return sum(sum(bool(c) for c in r[:k]) / k for r in rows) / len(rows)


def all_at_k(rows: Matrix, k: int | None = None) -> float:
    """Fraction of questions answered correctly in every one of the k runs."""
    k = _k(rows, k)
    if not rows or not k:
        return math.nan
    return sum(len(r) >= k and all(bool(c) for c in r[:k]) for r in rows) / len(rows)


def score(rows: Matrix, k: int) -> dict[str, Any]:
    accs = run_accuracies(rows, k)
    return {"n": len(rows), "pass@1": pass_at_1(rows, k), f"pass@{k}": pass_at_k(rows), f"cons@{k}": cons_at_k(rows, k),
            "all@k": all_at_k(rows, k), "best_pass@1": max(accs) if accs else math.nan, "per_run_pass@1": accs}


def is_invalid(record: dict) -> bool:
    """No usable answer: the trajectory stopped on max turns / tokens / an error, or answered with nothing."""
    return record.get("finish_reason") != "answer" or not str(record.get("prediction") or "").strip()


def behaviour(records: Iterable[dict]) -> dict[str, float]:
    records = list(records)
    if not records:
        return {"trajectories": 0}
    n = len(records)
    calls = [r.get("tool_calls") or [] for r in records]
    return {
        "trajectories": n,
        "invalid_rate": sum(is_invalid(r) for r in records) / n,
        "avg_turns": sum(int(r.get("turns") or 0) for r in records) / n,
        "avg_tool_calls": sum(len(c) for c in calls) / n,
        "avg_search_calls": sum(sum(1 for t in c if t.get("name") == "search") for c in calls) / n,
        "avg_visit_calls": sum(sum(1 for t in c if t.get("name") == "visit") for c in calls) / n,
        "finish_reasons": {reason: sum(r.get("finish_reason") == reason for r in records) / n
                           for reason in sorted({str(r.get("finish_reason")) for r in records})},
    }


def load_results(cfg: Config, benchmark: Benchmark, label: str) -> dict[str, list[dict | None]]:
    """qa_id → the k run records (None where a run has not produced it yet), for the benchmark's current items."""
    table: dict[str, list[dict | None]] = {qa.id: [None] * cfg.eval.runs for qa in benchmark.items}
    for run in range(cfg.eval.runs):
        for record in read_jsonl(run_file(cfg, benchmark.name, label, run)):
            if record.get("qa_id") in table:
                table[record["qa_id"]][run] = record
    return table


def _correct(record: dict | None) -> bool | None:
    return None if record is None else (record.get("judge") or {}).get("correct")


def score_model(cfg: Config, benchmark: Benchmark, label: str) -> dict[str, Any]:
    """Metrics per level and over all questions ("avg"), behaviour stats and coverage for one model."""
    k = cfg.eval.runs
    results = load_results(cfg, benchmark, label)
    level_of = {qa.id: str(qa.difficulty) for qa in benchmark.items}
    rows_by_level: dict[str, list[list[bool | None]]] = {lv: [] for lv in benchmark.levels}
    for qa_id, records in results.items():
        rows_by_level.setdefault(level_of[qa_id], []).append([_correct(r) for r in records])
    all_rows = [row for rows in rows_by_level.values() for row in rows]
    records = [r for recs in results.values() for r in recs if r is not None]
    expected = len(results) * k
    return {
        "levels": {lv: score(rows, k) for lv, rows in rows_by_level.items() if rows},
        "avg": score(all_rows, k),
        "behaviour": behaviour(records),
        "coverage": {"done": len(records), "expected": expected,
                     "judged": sum(_correct(r) is not None for r in records)},
    }


def summarize(cfg: Config, benchmarks: dict[str, Benchmark], models: dict[str, ModelSpec],
              skipped: dict[str, str] | None = None, write: bool = True) -> dict[str, Any]:
    """All metrics in one dict; written to eval/summary.json."""
    summary = {
        "run": cfg.run.name, "params": cfg.source, "k": cfg.eval.runs, "judge": cfg.judge.mode,
        "sampling": {"temperature": cfg.eval.temperature, "top_p": cfg.eval.top_p, "max_turns": cfg.eval.max_turns},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "models": {label: {"name": spec.name, "backend": spec.backend, "title": model_title(label),
                           # a checkpoint's backbone is the policy it was trained from
                           "backbone": cfg.models.policy.name if label in STAGES else spec.name}
                   for label, spec in models.items()},
        "benchmarks": {name: {"levels": b.levels, "counts": b.level_counts(), "note": b.note,
                              "results": {label: score_model(cfg, b, label) for label in models}}
                       for name, b in benchmarks.items()},
        "skipped": dict(skipped or {}),
        "published": {"source": PUBLISHED_SOURCE, "pass@1": {f"{b} | {f}": v for (b, f), v in PUBLISHED.items()}},
    }
    if write:
        path = cfg.run_dir / "eval" / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_clean(summary), indent=2, ensure_ascii=False))
    return summary


def _clean(obj: Any) -> Any:
    """NaN → None so summary.json is strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def metric_names(k: int) -> list[str]:
    """The headline metrics for k runs (with k = 1, Pass@k is Pass@1: listed once)."""
    return list(dict.fromkeys(["pass@1", f"pass@{k}", f"cons@{k}"]))


def model_title(label: str) -> str:
    return STAGE_TITLES.get(label, label)


# ================================================================== published numbers
PUBLISHED_SOURCE = ("WebDancer (arXiv 2505.22648v3), Table 1: Pass@1 (%), LLM-as-judge, GAIA 103 text-only "
                    "validation questions, WebWalkerQA 680 test questions. Published figures, not measured here.")
# (backbone, framework) → benchmark → level → Pass@1 (%). Levels as in our summaries; "avg" = Avg. column.
PUBLISHED: dict[tuple[str, str], dict[str, dict[str, float]]] = {
    ("Qwen-2.5-7B", "Vanilla ReAct"): {"gaia": {"1": 28.2, "2": 15.3, "3": 0.0, "avg": 18.4},
                                       "webwalkerqa": {"easy": 28.1, "medium": 31.2, "hard": 16.0, "avg": 24.2}},
    ("Qwen-2.5-7B", "WebDancer"): {"gaia": {"1": 41.0, "2": 30.7, "3": 0.0, "avg": 31.0},
                                   "webwalkerqa": {"easy": 40.6, "medium": 44.1, "hard": 28.2, "avg": 36.0}},
    ("Qwen-2.5-32B", "Vanilla ReAct"): {"gaia": {"1": 46.1, "2": 26.9, "3": 0.0, "avg": 31.0},
                                        "webwalkerqa": {"easy": 35.6, "medium": 38.7, "hard": 22.5, "avg": 31.9}},
    ("Qwen-2.5-32B", "WebDancer"): {"gaia": {"1": 46.1, "2": 44.2, "3": 8.3, "avg": 40.7},
                                    "webwalkerqa": {"easy": 44.3, "medium": 46.7, "hard": 29.2, "avg": 38.4}},
    ("QwQ-32B", "Vanilla ReAct"): {"gaia": {"1": 48.7, "2": 34.6, "3": 16.6, "avg": 37.8},
                                   "webwalkerqa": {"easy": 35.6, "medium": 29.1, "hard": 13.2, "avg": 24.1}},
    ("QwQ-32B", "WebDancer"): {"gaia": {"1": 61.5, "2": 50.0, "3": 25.0, "avg": 51.5},
                               "webwalkerqa": {"easy": 52.5, "medium": 59.6, "hard": 35.4, "avg": 47.9}},
    ("GPT-4o", "Vanilla ReAct"): {"gaia": {"1": 51.2, "2": 34.6, "3": 8.3, "avg": 34.6},
                                  "webwalkerqa": {"easy": 34.6, "medium": 42.0, "hard": 23.9, "avg": 33.8}},
}


def published_backbone(model_name: str) -> str | None:
    """The paper's backbone name for a policy model id (Qwen/Qwen2.5-7B-Instruct → Qwen-2.5-7B), else None."""
    key = re.sub(r"[^a-z0-9.]", "", model_name.lower())
    for pattern, backbone in (("qwq32b", "QwQ-32B"), ("qwen2.532b", "Qwen-2.5-32B"), ("qwen2.57b", "Qwen-2.5-7B")):
        if pattern in key:
            return backbone
    return None


# ================================================================== tables
def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def paper_table(summary: dict[str, Any], metric: str = "pass@1", published: bool = True):
    """A DataFrame in the shape of the paper's Table 1: rows (Backbone, Framework, Source), columns per benchmark
    (GAIA Level 1/2/3/Avg., WebWalkerQA Easy/Medium/Hard/Avg., Local web <levels>/Avg.); values in %.
    Published rows (Pass@1 only) are labelled `published (paper)`."""
    import pandas as pd

    k = summary["k"]
    columns: list[tuple[str, str]] = []
    level_keys: list[tuple[str, str]] = []
    for name, bench in summary["benchmarks"].items():
        for lv in bench["levels"] + ["avg"]:
            columns.append((BENCHMARK_TITLES.get(name, name), "Avg." if lv == "avg" else LEVEL_TITLES.get(lv, lv)))
            level_keys.append((name, lv))
    rows, index = [], []
    for label, info in summary["models"].items():
        values = []
        for name, lv in level_keys:
            res = summary["benchmarks"][name]["results"].get(label, {})
            cell = res.get("avg") if lv == "avg" else res.get("levels", {}).get(lv)
            v = (cell or {}).get(metric)
            values.append(None if v is None or (isinstance(v, float) and math.isnan(v)) else 100 * v)
        rows.append(values)
        index.append((info.get("backbone", info["name"]), info["title"], f"this run (k={k})"))
    if published and metric == "pass@1":
        for (backbone, framework), by_bench in PUBLISHED.items():
            values = [by_bench.get(name, {}).get(lv) for name, lv in level_keys]
            if any(v is not None for v in values):
                rows.append(values)
                index.append((backbone, framework, "published (paper)"))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["Backbone", "Framework", "Source"]),
                        columns=pd.MultiIndex.from_tuples(columns), dtype=float)


def table_markdown(df, title: str = "") -> str:
    """A Markdown rendering of `paper_table` (no extra dependency)."""
    heads = ["Backbone", "Framework", "Source"] + [f"{b} {lv}" for b, lv in df.columns]
    lines = ([f"**{title}**", ""] if title else []) + ["| " + " | ".join(heads) + " |",
                                                      "|" + "---|" * 3 + "---:|" * len(df.columns)]
    for idx, row in zip(df.index, df.itertuples(index=False)):
        lines.append("| " + " | ".join(list(idx) + [_fmt(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"


def write_tables(cfg: Config, summary: dict[str, Any]) -> Path:
    """eval/tables.md: Pass@1 (with published rows), Pass@k, Cons@k and behaviour per benchmark."""
    k = summary["k"]
    parts = [f"# Evaluation of run `{summary['run']}` ({summary['params']}; judge: {summary['judge']}; k={k})\n"]
    for metric in metric_names(k):
        parts.append(table_markdown(paper_table(summary, metric), title=metric.replace("pass", "Pass")
                                    .replace("cons", "Cons")))
    parts.append("**Behaviour** (per trajectory)\n\n" + behaviour_markdown(summary))
    if any(b["note"] for b in summary["benchmarks"].values()) or summary["skipped"]:
        parts.append("**Notes**\n\n" + "\n".join(
            [f"- {n}: {b['note']}" for n, b in summary["benchmarks"].items() if b["note"]] +
            [f"- skipped {n}: {why}" for n, why in summary["skipped"].items()]) + "\n")
    parts.append(f"_{PUBLISHED_SOURCE}_\n")
    path = cfg.run_dir / "eval" / "tables.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path


def behaviour_markdown(summary: dict[str, Any]) -> str:
    lines = ["| Benchmark | Model | trajectories | invalid % | turns | tool calls | search | visit | coverage |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, bench in summary["benchmarks"].items():
        for label, res in bench["results"].items():
            b, cov = res["behaviour"], res["coverage"]
            if not b.get("trajectories"):
                lines.append(f"| {BENCHMARK_TITLES.get(name, name)} | {model_title(label)} | 0 | - | - | - | - | - | "
                             f"0/{cov['expected']} |")
                continue
            lines.append(f"| {BENCHMARK_TITLES.get(name, name)} | {model_title(label)} | {b['trajectories']} | "
                         f"{100 * b['invalid_rate']:.1f} | {b['avg_turns']:.2f} | {b['avg_tool_calls']:.2f} | "
                         f"{b['avg_search_calls']:.2f} | {b['avg_visit_calls']:.2f} | {cov['done']}/{cov['expected']} |")
    return "\n".join(lines) + "\n"


# ================================================================== figures
def figures_dir(cfg: Config) -> Path:
    path = cfg.run_dir / "eval" / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _viewer_pages(cfg: Config, benchmark: Benchmark, models: dict[str, ModelSpec]) -> dict[tuple, str]:
    """(model, run) → relative link to a trajectory-viewer page (`wdlib.viewer`) rendering that run's file; the
    viewer anchors trajectory i of a page as `#t<i>`."""
    try:
        from .viewer import write_html
    except ImportError:
        return {}
    pages = {}
    for label in models:
        for run in range(cfg.eval.runs):
            records = list(read_jsonl(run_file(cfg, benchmark.name, label, run)))
            if not records:
                continue
            out = figures_dir(cfg) / "trajectories" / f"{benchmark.name}_{label}_run{run}.html"
            try:
                write_html(records, out, title=f"{BENCHMARK_TITLES.get(benchmark.name, benchmark.name)} · "
                                               f"{model_title(label)} · run {run + 1}")
            except Exception as exc:  # the drill-down still works without viewer links
                log.warning("trajectory viewer failed for %s run %d: %s", label, run, exc)
                continue
            pages[(label, run)] = f"trajectories/{out.name}"
            for i, record in enumerate(records):
                pages[(label, run, record.get("qa_id"))] = f"trajectories/{out.name}#t{i}"
    return pages


def write_drilldown(cfg: Config, benchmark: Benchmark, models: dict[str, ModelSpec]) -> Path:
    """eval/figures/drilldown_<benchmark>.html: one row per question (level, question, gold) and, per model and
    run, ✓/✗, the prediction, turns and tool calls, linked to the trajectory viewer page when there is one."""
    pages = _viewer_pages(cfg, benchmark, models)
    results = {label: load_results(cfg, benchmark, label) for label in models}
    k = cfg.eval.runs
    esc = html.escape
    head = "".join(f"<th>{esc(model_title(label))}</th>" for label in models)
    body = []
    for qa in benchmark.items:
        cells = []
        for label in models:
            runs = []
            for run, rec in enumerate(results[label][qa.id]):
                if rec is None:
                    runs.append('<div class="miss">run %d: not run</div>' % (run + 1))
                    continue
                ok = _correct(rec)
                mark = {True: "✓", False: "✗", None: "?"}[ok]
                pred = esc(str(rec.get("prediction") or "—")[:160])
                text = (f'{mark} {pred} <span class="meta">({rec.get("turns", 0)} turns, '
                        f'{len(rec.get("tool_calls") or [])} calls, {esc(str(rec.get("finish_reason")))})</span>')
                link = pages.get((label, run, qa.id))
                if link:
                    text = f'<a href="{esc(link)}">{text}</a>'
                runs.append(f'<div class="{"ok" if ok else "bad"}">run {run + 1}: {text}</div>')
            cells.append("<td>" + "".join(runs) + "</td>")
        body.append(f"<tr><td>{esc(LEVEL_TITLES.get(str(qa.difficulty), str(qa.difficulty)))}</td>"
                    f"<td>{esc(qa.question)}</td><td>{esc(qa.answer)}</td>{''.join(cells)}</tr>")
    title = f"{BENCHMARK_TITLES.get(benchmark.name, benchmark.name)}: per-question results (k={k})"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title><style>
body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}} th{{background:#eee;position:sticky;top:0}}
.ok{{color:#060}} .bad{{color:#900}} .miss{{color:#888}} .meta{{color:#666;font-size:11px}}
</style></head><body><h2>{esc(title)}</h2><p>{esc(benchmark.note)}</p>
<table><tr><th>Level</th><th>Question</th><th>Gold</th>{head}</tr>{''.join(body)}</table></body></html>"""
    path = figures_dir(cfg) / f"drilldown_{benchmark.name}.html"
    path.write_text(page, encoding="utf-8")
    return path


# ================================================================== wandb
def log_to_wandb(run: Any, summary: dict[str, Any]) -> None:
    """Scalars `<benchmark>/<model>/<metric>` (avg and per level) and the Pass@1 table, on a wandb run."""
    if run is None:
        return
    import wandb

    scalars = {}
    for name, bench in summary["benchmarks"].items():
        for label, res in bench["results"].items():
            for metric, v in res["avg"].items():
                if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                    scalars[f"{name}/{label}/{metric}"] = v
            for lv, cell in res["levels"].items():
                scalars[f"{name}/{label}/level_{lv}/pass@1"] = cell["pass@1"]
            for key in ("invalid_rate", "avg_turns", "avg_tool_calls"):
                if key in res["behaviour"]:
                    scalars[f"{name}/{label}/{key}"] = res["behaviour"][key]
    run.log(scalars)
    df = paper_table(summary).reset_index()
    df.columns = [" ".join(c).strip() if isinstance(c, tuple) else c for c in df.columns]
    run.log({"eval/pass@1_table": wandb.Table(dataframe=df.astype(str))})


__all__ = [
    "Benchmark", "BenchmarkError", "load_gaia", "load_webwalkerqa", "load_local", "load_benchmark", "load_benchmarks",
    "take_evenly", "eval_models", "checkpoint_dir", "run_file", "verdict", "evaluate_model", "run_evaluation",
    "pass_at_1", "pass_at_k", "cons_at_k", "all_at_k", "run_accuracies", "score", "behaviour", "is_invalid",
    "load_results", "score_model", "summarize", "PUBLISHED", "PUBLISHED_SOURCE", "published_backbone", "paper_table",
    "table_markdown", "write_tables", "figures_dir", "write_drilldown",
    "log_to_wandb",
]

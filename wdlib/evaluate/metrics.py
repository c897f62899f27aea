"""Evaluation metrics over k independent runs per question (k = `eval.runs`, 3 in the paper):
  Pass@1  mean over the k runs of the run's accuracy (each run is one Pass@1 measurement; we average them).
  Pass@k  fraction of questions answered correctly in at least one of the k runs.
  Cons@k  the paper's definition (WebDancer §5, "Detailed Results"): a question scores (#correct runs)/k — one right
          answer out of three gives 1/3, two give 2/3, three give 1 — averaged over questions. Arithmetically this
          is the same number as the run-averaged Pass@1 above (a missing or unjudged run counts as wrong in both);
          we report it under the paper's name. Works that call the single best run "Pass@1" can read best_pass@1.
  Also: best single-run Pass@1, each run's Pass@1, all@k (right in every run), invalid-output rate (trajectory ended
  without an answer: max turns, max tokens, error), average turns and tool calls per trajectory.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from wdlib.config import Config
from wdlib.evaluate.benchmarks import Benchmark
from wdlib.trajectory import read_jsonl

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
        for record in read_jsonl(cfg.paths.eval_run(benchmark.name, label, run)):
            if record.get("qa_id") in table:
                table[record["qa_id"]][run] = record
    return table


def correct(record: dict | None) -> bool | None:
    return None if record is None else (record.get("judge") or {}).get("correct")


def score_model(cfg: Config, benchmark: Benchmark, label: str) -> dict[str, Any]:
    """Metrics per level and over all questions ("avg"), behaviour stats and coverage for one model."""
    k = cfg.eval.runs
    results = load_results(cfg, benchmark, label)
    level_of = {qa.id: str(qa.difficulty) for qa in benchmark.items}
    rows_by_level: dict[str, list[list[bool | None]]] = {lv: [] for lv in benchmark.levels}
    for qa_id, records in results.items():
        rows_by_level.setdefault(level_of[qa_id], []).append([correct(r) for r in records])
    all_rows = [row for rows in rows_by_level.values() for row in rows]
    records = [r for recs in results.values() for r in recs if r is not None]
    expected = len(results) * k
    return {
        "levels": {lv: score(rows, k) for lv, rows in rows_by_level.items() if rows},
        "avg": score(all_rows, k),
        "behaviour": behaviour(records),
        "coverage": {"done": len(records), "expected": expected,
                     "judged": sum(correct(r) is not None for r in records)},
    }

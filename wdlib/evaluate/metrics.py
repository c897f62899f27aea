"""Evaluation metrics over k independent runs per question (k = `eval.runs`, 3 in the paper), each with a 95%
bootstrap confidence interval over questions, and the paired bootstrap of a difference between two models.

The data is a matrix of verdicts: one row per question, one column per run; a missing or unjudged cell counts as
wrong (so a half-finished evaluation can only look worse, never better).

  pass@1       the mean over the k runs of each run's accuracy. The authors' evaluation script (WebSailor's
               `evaluate.py`, the WebAgent family's shared one) prints it as "Avg. Pass@3".
  best_pass@1  the best single run's accuracy; the same script prints it as "Best Pass@1", beside the mean. Which
               of the two the paper's Table 1 calls Pass@1 is not stated, so our tables show both beside it.
  pass@k       a question counts when at least one of its k runs is right.
  cons@k       the paper's own definition (WebDancer §5, "Detailed Results"): "The Cons@3 metric is computed by
               evaluating the number of correct responses out of three independent attempts: achieving one correct
               answer yields a score of 1/3, two correct answers yield 2/3, and three correct answers result in a full
               score of 1", averaged over questions. Read as written this equals pass@1 (mean) whenever every
               question has all k runs: both are (right cells) / (questions x k). We implement the text, and keep
               it as its own number because the paper reports it as one (Figure 4, Table 3). It is not a majority
               vote (`cons@k` in DeepSeek-R1's sense); nothing in the paper describes voting.
  all@k        right in every run.

Confidence intervals: percentile bootstrap over questions (resample the rows with replacement, keep each row's k
runs together, recompute the metric), `samples` resamples from a seeded generator, so a summary is reproducible.
`paired_bootstrap(a, b)`: the same resampled questions for both models (their rows aligned by question), giving the
difference b - a, its percentile CI and a two-sided p-value for "no difference" (the bootstrap distribution of the
difference shifted to mean 0: p = (1 + #{|d* - d| >= |d|}) / (samples + 1)).

Also: the invalid-output rate (the trajectory ended without an answer: max turns, max tokens, error), average turns
and tool calls per trajectory, and how the judge decided (methods, unparsed replies, errors).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from wdlib.config import Config
from wdlib.evaluate.benchmarks import Benchmark
from wdlib.trajectory import read_jsonl

Matrix = Sequence[Sequence[bool | None]]  # rows = questions, columns = runs; None = run missing or unjudged
BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95


# ================================================================== metrics on a (…, questions, runs) array
def as_array(rows: Matrix, k: int | None = None) -> np.ndarray:
    """Questions x k array of 0/1 (float); missing and unjudged cells are 0; rows shorter than k are padded."""
    k = k if k is not None else max((len(r) for r in rows), default=0)
    out = np.zeros((len(rows), k))
    for i, row in enumerate(rows):
        for j, cell in enumerate(list(row)[:k]):
            out[i, j] = 1.0 if cell else 0.0
    return out


# Each statistic takes an array shaped (..., questions, runs) and returns shape (...): batched over resamples.
def _mean_pass_at_1(c: np.ndarray) -> np.ndarray:
    return c.mean(axis=(-2, -1))


def _best_pass_at_1(c: np.ndarray) -> np.ndarray:
    return c.mean(axis=-2).max(axis=-1)


def _pass_at_k(c: np.ndarray) -> np.ndarray:
    return c.max(axis=-1).mean(axis=-1)


def _cons_at_k(c: np.ndarray) -> np.ndarray:
    return (c.sum(axis=-1) / c.shape[-1]).mean(axis=-1)


def _all_at_k(c: np.ndarray) -> np.ndarray:
    return c.min(axis=-1).mean(axis=-1)


def statistics(k: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The headline metrics for k runs, by the names the summary uses (with k = 1, pass@k is pass@1: listed once)."""
    return {"pass@1": _mean_pass_at_1, "best_pass@1": _best_pass_at_1, f"pass@{k}": _pass_at_k,
            f"cons@{k}": _cons_at_k}


def _value(stat: Callable, rows: Matrix, k: int | None) -> float:
    c = as_array(rows, k)
    return float(stat(c)) if c.size else math.nan


def run_accuracies(rows: Matrix, k: int | None = None) -> list[float]:
    """Pass@1 of each run (a missing/unjudged cell counts as wrong)."""
    c = as_array(rows, k)
    return [float(v) for v in c.mean(axis=0)] if c.size else []


def pass_at_1(rows: Matrix, k: int | None = None) -> float:
    """Mean over the k runs of each run's accuracy."""
    return _value(_mean_pass_at_1, rows, k)


def best_pass_at_1(rows: Matrix, k: int | None = None) -> float:
    """The best single run's accuracy."""
    return _value(_best_pass_at_1, rows, k)


def pass_at_k(rows: Matrix, k: int | None = None) -> float:
    """Fraction of questions with at least one correct run."""
    return _value(_pass_at_k, rows, k)


def cons_at_k(rows: Matrix, k: int | None = None) -> float:
    """WebDancer's Cons@k: each question scores (#correct runs)/k (1/3, 2/3, 1 for k=3), averaged over questions."""
    return _value(_cons_at_k, rows, k)


def all_at_k(rows: Matrix, k: int | None = None) -> float:
    """Fraction of questions answered correctly in every one of the k runs."""
    return _value(_all_at_k, rows, k)


# ================================================================== bootstrap
def _resamples(n_questions: int, samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_questions, size=(samples, n_questions))


def _batched(stat: Callable, c: np.ndarray, idx: np.ndarray, chunk: int = 250) -> np.ndarray:
    """`stat` over the resampled arrays c[idx[b]], a chunk of resamples at a time (bounded memory)."""
    return np.concatenate([stat(c[idx[i:i + chunk]]) for i in range(0, len(idx), chunk)])


def _interval(values: np.ndarray, confidence: float) -> list[float]:
    lo, hi = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [float(lo), float(hi)]


def bootstrap_ci(rows: Matrix, k: int, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                 confidence: float = CONFIDENCE) -> dict[str, list[float]]:
    """Percentile CI of every metric of `statistics(k)`, resampling questions (each with its k runs); NaNs when
    there are no questions."""
    c = as_array(rows, k)
    if not c.size:
        return {name: [math.nan, math.nan] for name in statistics(k)}
    idx = _resamples(len(c), samples, seed)
    return {name: _interval(_batched(stat, c, idx), confidence) for name, stat in statistics(k).items()}


def paired_bootstrap(rows_a: Matrix, rows_b: Matrix, k: int, metric: str = "pass@1", *,
                     samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                     confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Difference `metric(b) - metric(a)` of two models on the same questions (row i of both is the same question),
    with its percentile CI and a two-sided p-value (see the module docstring). {"diff", "ci", "p", "n"}."""
    a, b = as_array(rows_a, k), as_array(rows_b, k)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs the same questions for both models: {a.shape} vs {b.shape}")
    if not a.size:
        return {"diff": math.nan, "ci": [math.nan, math.nan], "p": math.nan, "n": 0}
    stat = statistics(k)[metric]
    diff = float(stat(b) - stat(a))
    idx = _resamples(len(a), samples, seed)
    boot = _batched(stat, b, idx) - _batched(stat, a, idx)
    p = (1 + int(np.sum(np.abs(boot - diff) >= abs(diff) - 1e-12))) / (samples + 1)
    return {"diff": diff, "ci": _interval(boot, confidence), "p": min(1.0, p), "n": len(a)}


def score(rows: Matrix, k: int, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, Any]:
    """Every metric of one cell (a level, or all questions) with its CI: {"n", "pass@1", "best_pass@1", "pass@k",
    "cons@k", "all@k", "per_run_pass@1", "ci": {metric: [lo, hi]}}."""
    c = as_array(rows, k)
    values = {name: (float(stat(c)) if c.size else math.nan) for name, stat in statistics(k).items()}
    return {"n": len(rows), **values, "all@k": float(_all_at_k(c)) if c.size else math.nan,
            "per_run_pass@1": run_accuracies(rows, k), "ci": bootstrap_ci(rows, k, samples=samples, seed=seed)}


# ================================================================== behaviour and judging
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


def judging(records: Iterable[dict]) -> dict[str, Any]:
    """How the verdicts came about: counts per method, replies the judge parser could not read (`unparsed`, counted
    as wrong, never replaced by rules), judge errors, and the judge models and prompt versions seen."""
    verdicts = [r.get("judge") or {} for r in records]
    return {"methods": dict(Counter(str(v.get("method")) for v in verdicts)),
            "unparsed": sum(bool(v.get("unparsed")) for v in verdicts),
            "errors": sum(v.get("method") == "error" for v in verdicts),
            "models": sorted({str(v["model"]) for v in verdicts if v.get("model")}),
            "prompt_versions": sorted({str(v["prompt_version"]) for v in verdicts if v.get("prompt_version")})}


# ================================================================== a model's results on a benchmark
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


def verdict_rows(results: dict[str, list[dict | None]], ids: Iterable[str]) -> list[list[bool | None]]:
    return [[correct(r) for r in results[qa_id]] for qa_id in ids]


def score_model(cfg: Config, benchmark: Benchmark, label: str, *, samples: int = BOOTSTRAP_SAMPLES) -> dict[str, Any]:
    """Metrics with CIs per level, over all questions ("avg") and per group (`benchmark.group_by`, e.g.
    WebWalkerQA's single- vs multi-source), behaviour, judging and coverage for one model."""
    k, seed = cfg.eval.runs, cfg.run.seed
    results = load_results(cfg, benchmark, label)
    by_level: dict[str, list[str]] = {lv: [] for lv in benchmark.levels}
    by_group: dict[str, list[str]] = {}
    for qa in benchmark.items:
        by_level.setdefault(str(qa.difficulty), []).append(qa.id)
        if benchmark.group_by:
            by_group.setdefault(str(getattr(qa, benchmark.group_by, "") or "?"), []).append(qa.id)
    records = [r for recs in results.values() for r in recs if r is not None]

    def cell(ids: list[str]) -> dict[str, Any]:
        return score(verdict_rows(results, ids), k, samples=samples, seed=seed)

    return {
        "levels": {lv: cell(ids) for lv, ids in by_level.items() if ids},
        "avg": cell([qa.id for qa in benchmark.items]),
        "groups": {g: cell(ids) for g, ids in sorted(by_group.items())},
        "behaviour": behaviour(records),
        "judging": judging(records),
        "coverage": {"done": len(records), "expected": len(results) * k,
                     "judged": sum(correct(r) is not None for r in records)},
    }

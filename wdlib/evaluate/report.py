"""Evaluation report: `summarize` (every metric with its 95% CI in one dict, written to `eval/summary.json`), the
gains of each training stage over the previous one (paired bootstrap), the per-question drill-down page linked to
the trajectory viewer, and the wandb log. The paper's published rows and `paper_table` are `wdlib.evaluate.published`,
the Markdown tables `wdlib.evaluate.tables`.

The shape of `eval/summary.json` (what the tables, the figures and notebooks read):

    {"run", "params", "k", "created",
     "judge": {"modes": {benchmark: mode}, "model": judge model or null, "audit": [audit judge names]},
     "bootstrap": {"samples", "confidence", "seed"},
     "sampling": {"temperature", "top_p", "max_turns", "max_format_errors"},
     "models": {label: {"name", "backend", "dtype", "title", "backbone"}},
     "benchmarks": {benchmark: {
         "levels": [level, ...], "counts": {level: n}, "note": str, "group_by": field or null,
         "results": {label: {
             "levels": {level: CELL}, "avg": CELL, "groups": {group: CELL},   # groups: WebWalkerQA single/multi-source
             "behaviour": {"trajectories", "invalid_rate", "avg_turns", "avg_tool_calls", ...},
             "judging": {"methods": {method: n}, "unparsed", "errors", "models", "prompt_versions"},
             "coverage": {"done", "expected", "judged"}}}}},
     "gains": {benchmark: [{"from": label, "to": label, "n": questions both completed,
                            "metrics": {metric: {level | "avg": {"diff", "ci": [lo, hi], "p", "n"}}}}]},
     "judge_audit": {benchmark: {"judges", "modes", "pairs": [{"a", "b", "n", "agreement", "kappa",
                                                                "disagreements"}]}},   # only with eval.judges
     "skipped": {what: why},
     "published": {"source", "pass@1": {"backbone | framework": {benchmark: {level | "avg": %}}}}}

    CELL = {"n", "pass@1", "best_pass@1", "pass@<k>", "cons@<k>", "all@k", "per_run_pass@1": [...],
            "ci": {"pass@1": [lo, hi], "best_pass@1": [...], "pass@<k>": [...], "cons@<k>": [...]}}

Scores are fractions in [0, 1] (tables show %); "avg" is over all questions (micro average, as the paper's Table 1);
NaN is written as null. Gains compare consecutive stages among base → sft → dapo (or whichever of them were
evaluated), then any pairs asked for (`compare`), on the questions both completed in every run, by
`wdlib.evaluate.metrics.paired_bootstrap`: diff = later − earlier.
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from wdlib.config import Config, ModelSpec
from wdlib.evaluate.audit import audit, write_audit_page
from wdlib.evaluate.benchmarks import Benchmark, judge_mode
from wdlib.evaluate.metrics import CONFIDENCE, correct, load_results, paired_bootstrap, score_model, verdict_rows
from wdlib.evaluate.published import PUBLISHED, PUBLISHED_SOURCE, paper_table
from wdlib.labels import BENCHMARK_TITLES, LEVEL_TITLES, STAGES, model_title
from wdlib.trajectory import read_jsonl
from wdlib.viewer import write_html

log = logging.getLogger(__name__)
GAIN_METRICS = ("pass@1", "best_pass@1", "pass@k")  # cons@k equals pass@1 on questions with every run done


def summarize(cfg: Config, benchmarks: dict[str, Benchmark], models: dict[str, ModelSpec],
              skipped: dict[str, str] | None = None, write: bool = True,
              compare: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """All metrics with their CIs, the stage gains and the judge audit in one dict (shape: the module docstring);
    written to eval/summary.json (and, with `eval.judges`, the disagreements to eval/figures/judge_audit.html).
    `compare`: more (before, after) pairs of evaluated models to compare like the stages (e.g. two DAPO trials)."""
    samples, k = cfg.eval.bootstrap_samples, cfg.eval.runs
    summary = {
        "run": cfg.run.name, "params": cfg.source, "k": k, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "judge": {"modes": {name: judge_mode(cfg, name) for name in benchmarks},
                  "model": cfg.models.judge.name if cfg.models.judge else None,
                  "audit": [j.name for j in cfg.eval.judges]},
        "bootstrap": {"samples": samples, "confidence": CONFIDENCE, "seed": cfg.run.seed},
        "sampling": {"temperature": cfg.eval.temperature, "top_p": cfg.eval.top_p, "max_turns": cfg.eval.max_turns,
                     "max_format_errors": cfg.eval.max_format_errors},
        "models": {label: {"name": spec.name, "backend": spec.backend, "dtype": spec.dtype, "title": model_title(label),
                           # a checkpoint's backbone is the policy it was trained from
                           "backbone": cfg.models.policy.name if label in STAGES else spec.name}
                   for label, spec in models.items()},
        "benchmarks": {name: {"levels": b.levels, "counts": b.level_counts(), "note": b.note, "group_by": b.group_by,
                              "results": {label: score_model(cfg, b, label, samples=samples) for label in models}}
                       for name, b in benchmarks.items()},
        "gains": {name: stage_gains(cfg, b, list(models), samples=samples, extra_pairs=compare)
                  for name, b in benchmarks.items()},
        "judge_audit": audit(cfg, benchmarks, models),
        "skipped": dict(skipped or {}),
        "published": {"source": PUBLISHED_SOURCE, "pass@1": {f"{b} | {f}": v for (b, f), v in PUBLISHED.items()}},
    }
    if write:
        path = cfg.paths.eval_summary
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_clean(summary), indent=2, ensure_ascii=False))
        if cfg.eval.judges:  # the answers the judges disagree on
            write_audit_page(cfg, benchmarks, models, cfg.paths.eval_figures)
    return summary


def stage_gains(cfg: Config, benchmark: Benchmark, labels: list[str], *, samples: int,
                extra_pairs: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """The paired bootstrap of each evaluated stage over the previous one (base → sft → sft-rs → dapo; DAPO over the
    checkpoint it started from, `dapo.init`, when that was evaluated), then of each `extra_pairs` (before, after)
    among `labels`, per level and over all questions, on the questions both models completed in every run."""
    k = cfg.eval.runs
    stages = [s for s in STAGES if s in labels]
    pairs = [(cfg.dapo.init if after == "dapo" and cfg.dapo.init in stages else before, after)
             for before, after in zip(stages, stages[1:])]
    for pair in extra_pairs or []:
        missing = [label for label in pair if label not in labels]
        if missing:
            raise ValueError(f"cannot compare {pair[0]} with {pair[1]}: {missing} not evaluated here ({labels})")
        if tuple(pair) not in pairs:
            pairs.append(tuple(pair))
    out = []
    for before, after in pairs:
        res = {label: load_results(cfg, benchmark, label) for label in (before, after)}
        both = [qa for qa in benchmark.items if all(r is not None for label in res for r in res[label][qa.id])]
        cells = {"avg": [qa.id for qa in both]}
        for qa in both:
            cells.setdefault(str(qa.difficulty), []).append(qa.id)
        metrics = {}
        for metric in GAIN_METRICS:
            name = f"pass@{k}" if metric == "pass@k" else metric
            metrics[name] = {cell: paired_bootstrap(verdict_rows(res[before], ids), verdict_rows(res[after], ids), k,
                                                    name, samples=samples, seed=cfg.run.seed)
                             for cell, ids in cells.items()}
        out.append({"from": before, "to": after, "n": len(both), "metrics": metrics})
    return out


def _clean(obj: Any) -> Any:
    """NaN → None so summary.json is strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


# ================================================================== figures
def figures_dir(cfg: Config) -> Path:
    path = cfg.paths.eval_figures
    path.mkdir(parents=True, exist_ok=True)
    return path


def _viewer_pages(cfg: Config, benchmark: Benchmark, models: dict[str, ModelSpec]) -> dict[tuple, str]:
    """(model, run) → relative link to a trajectory-viewer page (`wdlib.viewer`) rendering that run's file; the
    viewer anchors trajectory i of a page as `#t<i>`."""
    pages = {}
    for label in models:
        for run in range(cfg.eval.runs):
            records = list(read_jsonl(cfg.paths.eval_run(benchmark.name, label, run)))
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
                ok = correct(rec)
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

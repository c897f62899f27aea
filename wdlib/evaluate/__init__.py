"""Evaluation (notebook 05): GAIA, WebWalkerQA and the local-web set; Pass@1, Pass@k, Cons@k; tables in the paper's
shape.

Flow: `load_benchmarks(cfg)` → `eval_models(cfg)` → `run_evaluation(cfg, benchmarks, models)` →
`summarize(...)` → `paper_table(summary)` / `write_tables` / `write_drilldown(...)`; the bar charts of the summary
are `wdlib.plots.eval_scores` and `eval_behaviour`.

    benchmarks  loaders (GAIA, WebWalkerQA, the local-web set), levels, `eval.limit`
    run         the agent k times per model and benchmark, judged, resumable
    metrics     Pass@1 / Pass@k / Cons@k / all@k, behaviour, per level
    report      summary.json, the paper's published rows, tables, drill-down pages, wandb

Files under the run folder (`cfg.paths`): eval/<benchmark>/<model>/run<r>.jsonl (one Trajectory per question and run,
plus {"eval": {...}} and its `judge`), eval/summary.json, eval/tables.md, eval/figures/. Levels: GAIA 1/2/3,
WebWalkerQA easy/medium/hard, local web: the QA pair's difficulty (E2HQA hops) or type. "Avg." is over all questions
(micro average), as in the paper's Table 1. This module only re-exports.
"""

from wdlib.evaluate.benchmarks import (BENCHMARKS, GAIA_LEVELS, WEBWALKERQA_LEVELS, Benchmark, BenchmarkError,
                                       load_benchmark, load_benchmarks, load_gaia, load_local, load_webwalkerqa,
                                       local_level, take_evenly)
from wdlib.evaluate.metrics import (all_at_k, behaviour, cons_at_k, is_invalid, load_results, pass_at_1, pass_at_k,
                                    run_accuracies, score, score_model)
from wdlib.evaluate.report import (PUBLISHED, PUBLISHED_SOURCE, behaviour_markdown, figures_dir, log_to_wandb,
                                   paper_table, summarize, table_markdown, write_drilldown, write_tables)
from wdlib.evaluate.run import eval_models, evaluate_model, run_evaluation, verdict
from wdlib.labels import metric_names, model_title, published_backbone

__all__ = [
    "BENCHMARKS", "GAIA_LEVELS", "WEBWALKERQA_LEVELS", "Benchmark", "BenchmarkError", "load_benchmark",
    "load_benchmarks", "load_gaia", "load_local", "load_webwalkerqa", "local_level", "take_evenly",
    "all_at_k", "behaviour", "cons_at_k", "is_invalid", "load_results", "pass_at_1", "pass_at_k", "run_accuracies",
    "score", "score_model",
    "PUBLISHED", "PUBLISHED_SOURCE", "behaviour_markdown", "figures_dir", "log_to_wandb", "paper_table", "summarize",
    "table_markdown", "write_drilldown", "write_tables",
    "eval_models", "evaluate_model", "run_evaluation", "verdict",
    "metric_names", "model_title", "published_backbone",
]

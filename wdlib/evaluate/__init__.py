"""Evaluation (notebook 05): GAIA, WebWalkerQA and the local-web set; Pass@1, Pass@k, Cons@k; tables in the paper's
shape.

Flow: `load_benchmarks(cfg)` → `eval_models(cfg)` → `run_evaluation(cfg, benchmarks, models)` →
`summarize(...)` → `paper_table(summary)` / `write_tables` / `write_drilldown(...)`; the bar charts of the summary
are `wdlib.plots.eval_scores` and `eval_behaviour`.

    benchmarks  loaders (GAIA, WebWalkerQA, the local-web set), levels, `eval.limit`
    run         the agent k times per model and benchmark, judged (per-benchmark judge, audit judges), resumable
    metrics     Pass@1 (mean and best run) / Pass@k / Cons@k with bootstrap CIs, the paired bootstrap, behaviour
    audit       agreement between judges (Cohen's kappa) and the page of their disagreements
    published   the paper's published rows (Table 1) and `paper_table`: a summary in that shape
    report      summary.json (its shape is documented there), stage gains, drill-down, wandb
    tables      tables.md: metric tables with CIs in the paper's shape, groups, gains, judging

Files under the run folder (`cfg.paths`): eval/<benchmark>/<model>/run<r>.jsonl (one Trajectory per question and run,
plus {"eval": {...}} and its `judge`), eval/summary.json, eval/tables.md, eval/figures/. Levels: GAIA 1/2/3,
WebWalkerQA easy/medium/hard (also by single- / multi-source), local web: the graded QA's level 1/2/3 when the
pairs carry one, else E2HQA hops or the QA type. "Avg." is over all questions
(micro average), as in the paper's Table 1; every metric carries a 95% bootstrap CI over questions. This module only
re-exports.
"""

from wdlib.evaluate.benchmarks import (BENCHMARKS, GAIA_LEVELS, WEBWALKERQA_LEVELS, Benchmark, BenchmarkError,
                                       judge_mode, load_benchmark, load_benchmarks, load_gaia, load_local,
                                       load_qa_file, load_webwalkerqa, local_level, take_evenly)
from wdlib.evaluate.audit import audit, cohen_kappa, write_audit_page
from wdlib.evaluate.metrics import (all_at_k, as_array, behaviour, best_pass_at_1, bootstrap_ci, cons_at_k, is_invalid,
                                    judging, load_results, paired_bootstrap, pass_at_1, pass_at_k, run_accuracies,
                                    score, score_model, statistics)
from wdlib.evaluate.published import PUBLISHED, PUBLISHED_LABEL, PUBLISHED_SOURCE, paper_table
from wdlib.evaluate.report import figures_dir, log_to_wandb, stage_gains, summarize, write_drilldown
from wdlib.evaluate.run import eval_models, evaluate_model, run_evaluation, verdict
from wdlib.evaluate.tables import (behaviour_markdown, fmt_ci, gains_markdown, groups_markdown, judging_markdown,
                                   metric_titles, table_markdown, write_tables)
from wdlib.labels import metric_names, model_title, published_backbone

__all__ = [
    "BENCHMARKS", "GAIA_LEVELS", "WEBWALKERQA_LEVELS", "Benchmark", "BenchmarkError", "load_benchmark",
    "load_benchmarks", "load_gaia", "load_local", "load_qa_file", "load_webwalkerqa", "local_level", "take_evenly",
    "audit", "cohen_kappa", "write_audit_page",
    "all_at_k", "as_array", "behaviour", "best_pass_at_1", "bootstrap_ci", "cons_at_k", "is_invalid", "judging",
    "load_results", "paired_bootstrap", "pass_at_1", "pass_at_k", "run_accuracies", "score", "score_model",
    "statistics",
    "PUBLISHED", "PUBLISHED_LABEL", "PUBLISHED_SOURCE", "paper_table",
    "figures_dir", "log_to_wandb", "stage_gains", "summarize", "write_drilldown",
    "eval_models", "evaluate_model", "judge_mode", "run_evaluation", "verdict",
    "behaviour_markdown", "fmt_ci", "gains_markdown", "groups_markdown", "judging_markdown", "metric_titles",
    "table_markdown", "write_tables",
    "metric_names", "model_title", "published_backbone",
]

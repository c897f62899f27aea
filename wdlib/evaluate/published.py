"""The paper's published numbers (WebDancer, Table 1: Pass@1 per level of GAIA and WebWalkerQA) and a run's summary
(`wdlib.evaluate.report.summarize`) in the same shape: `paper_table`, the DataFrame that the Markdown tables
(`wdlib.evaluate.tables`) and the wandb log (`wdlib.evaluate.report`) read, the published rows beside this run's.
`cell` reads one model's metrics on one level out of a summary. Imports only the display names (`wdlib.labels`).
"""

from __future__ import annotations

import math
from typing import Any

from wdlib.labels import BENCHMARK_TITLES, LEVEL_TITLES

PUBLISHED_SOURCE = ("WebDancer (arXiv 2505.22648v3), Table 1: Pass@1 (%), LLM-as-judge (Qwen2.5-72B-Instruct, "
                    "WebThinker's equivalence prompt, per the authors' code), GAIA 103 text-only validation questions, "
                    "WebWalkerQA 680 test questions. The paper does not say whether its Pass@1 is the mean or the best "
                    "of its 3 runs (the authors' evaluation script prints both). Published figures, not measured here.")
# The paper's Table 1 as printed: backbone, framework, GAIA Level 1 / 2 / 3 / Avg., WebWalkerQA Easy / Medium / Hard /
# Avg. (Pass@1, %).
_TABLE_1 = [
    ("Qwen-2.5-7B", "Vanilla ReAct", 28.2, 15.3, 0.0, 18.4, 28.1, 31.2, 16.0, 24.2),
    ("Qwen-2.5-7B", "WebDancer", 41.0, 30.7, 0.0, 31.0, 40.6, 44.1, 28.2, 36.0),
    ("Qwen-2.5-32B", "Vanilla ReAct", 46.1, 26.9, 0.0, 31.0, 35.6, 38.7, 22.5, 31.9),
    ("Qwen-2.5-32B", "WebDancer", 46.1, 44.2, 8.3, 40.7, 44.3, 46.7, 29.2, 38.4),
    ("QwQ-32B", "Vanilla ReAct", 48.7, 34.6, 16.6, 37.8, 35.6, 29.1, 13.2, 24.1),
    ("QwQ-32B", "WebDancer", 61.5, 50.0, 25.0, 51.5, 52.5, 59.6, 35.4, 47.9),
    ("GPT-4o", "Vanilla ReAct", 51.2, 34.6, 8.3, 34.6, 34.6, 42.0, 23.9, 33.8),
]
# (backbone, framework) → benchmark → level → Pass@1 (%). Levels as in our summaries; "avg" = Avg. column.
PUBLISHED: dict[tuple[str, str], dict[str, dict[str, float]]] = {
    (backbone, framework): {"gaia": dict(zip(("1", "2", "3", "avg"), scores[:4])),
                            "webwalkerqa": dict(zip(("easy", "medium", "hard", "avg"), scores[4:]))}
    for backbone, framework, *scores in _TABLE_1}

PUBLISHED_LABEL = "published (paper, Table 1 Pass@1)"


def paper_table(summary: dict[str, Any], metric: str = "pass@1", published: bool = True):
    """A DataFrame in the shape of the paper's Table 1: rows (Backbone, Framework, Source), columns per benchmark
    (GAIA Level 1/2/3/Avg., WebWalkerQA Easy/Medium/Hard/Avg., Local web <levels>/Avg.); values in %. The paper's
    Table 1 rows join the Pass@1 tables (mean and best of the runs: the paper does not say which it printed),
    labelled `PUBLISHED_LABEL`."""
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
            v = (cell(summary, name, label, lv) or {}).get(metric)
            values.append(None if v is None or (isinstance(v, float) and math.isnan(v)) else 100 * v)
        rows.append(values)
        index.append((info.get("backbone", info["name"]), info["title"], f"this run (k={k})"))
    if published and metric in ("pass@1", "best_pass@1"):
        for (backbone, framework), by_bench in PUBLISHED.items():
            values = [by_bench.get(name, {}).get(lv) for name, lv in level_keys]
            if any(v is not None for v in values):
                rows.append(values)
                index.append((backbone, framework, PUBLISHED_LABEL))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["Backbone", "Framework", "Source"]),
                        columns=pd.MultiIndex.from_tuples(columns), dtype=float)


def cell(summary: dict[str, Any], benchmark: str, label: str, level: str) -> dict[str, Any] | None:
    """One model's metrics on one level ("avg": all questions) of a benchmark, from a summary."""
    res = summary["benchmarks"][benchmark]["results"].get(label, {})
    return res.get("avg") if level == "avg" else res.get("levels", {}).get(level)

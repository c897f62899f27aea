"""Analysis figures (plotly). Tables first (`qa_table`, `trajectory_table`: one row per record), then figures that
read them, so a notebook can print the numbers it plots. `save(fig, path)` writes HTML that works offline (plotly.js
is written once next to the figures, not fetched from a CDN).

Trajectory statistics, per trajectory: turns (assistant turns), actions (tool calls), search / visit calls, think
tokens (all <think> blocks, summed), answer tokens. WebDancer reports 4.56 actions and 510 think tokens on average
for its short-CoT data and 2.31 / 1,599 for long-CoT (PAPER_STATS); the released samples can be put side by side.
Token counts use whatever tokenizer the caller passes (the paper's numbers come from Qwen's), else words × 1.3.

Training (notebooks 03, 04): `sft_loss`, `dapo_reward`, `dapo_kept_groups` from a trainer's log history. Evaluation
(notebook 05): `eval_scores`, `eval_behaviour` from `wdlib.evaluate.summarize`'s summary.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from wdlib.labels import BENCHMARK_TITLES, LEVEL_TITLES, metric_names, model_title, published_backbone
from wdlib.trajectory import QAPair, Trajectory

PAPER_STATS = {"WebDancer paper, short CoT": {"actions": 4.56, "think_tokens": 510},
               "WebDancer paper, long CoT": {"actions": 2.31, "think_tokens": 1599}}
METRICS = {"turns": "assistant turns", "actions": "tool calls", "search": "search calls", "visit": "visit calls",
           "think_tokens": "think tokens", "answer_tokens": "answer tokens"}
_THINK = re.compile(r"<think>(.*?)</think>", re.S)


def word_tokens(text: str) -> int:
    """Token estimate without a tokenizer (English BPE ≈ 1.3 tokens per word)."""
    return round(len(text.split()) * 1.3)


def tokenizer_counter(tokenizer: Any) -> Callable[[str], int]:
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0


# ------------------------------------------------------------------ tables
def qa_table(qa: Iterable[QAPair | dict], split: str = "train") -> pd.DataFrame:
    rows = []
    for q in qa:
        q = q if isinstance(q, QAPair) else QAPair.from_dict(q)
        hops = q.difficulty if q.source == "e2hqa" else len(q.evidence_urls)
        rows.append({"id": q.id, "source": q.source, "type": q.type or q.source, "hops": hops,
                     "generator": q.provenance.get("generator") or q.provenance.get("rewriter") or "",
                     "question_words": len(q.question.split()), "answer_words": len(str(q.answer).split()),
                     "split": split})
    return pd.DataFrame(rows, columns=["id", "source", "type", "hops", "generator", "question_words", "answer_words",
                                       "split"])


def trajectory_table(trajectories: Iterable[Trajectory], label: str, *, qa_types: dict[str, str] | None = None,
                     count_tokens: Callable[[str], int] = word_tokens) -> pd.DataFrame:
    """One row per trajectory. `qa_types` maps qa_id → QA type (for pass rate by type); WebDancer's released
    samples carry their own type (crawlqa / e2hqa) only in the raw file, so the caller may pass it."""
    rows = []
    for t in trajectories:
        think = sum(count_tokens(m.strip()) for turn in t.assistant_turns for m in _THINK.findall(turn))
        names = [c.get("name") for c in t.tool_calls]
        kept = t.filters.get("kept") if t.filters else None
        rows.append({"label": label, "id": t.id, "qa_id": t.qa_id, "type": (qa_types or {}).get(t.qa_id, "?"),
                     "turns": t.turns, "actions": len(names), "search": names.count("search"),
                     "visit": names.count("visit"), "think_tokens": think,
                     "answer_tokens": count_tokens(t.prediction) if t.prediction else 0,
                     "answered": t.prediction is not None, "finish": t.finish_reason,
                     "correct": t.judge.get("correct") if t.judge else None, "kept": kept})
    return pd.DataFrame(rows)


def means(df: pd.DataFrame, with_paper: bool = True) -> pd.DataFrame:
    """Mean of every metric per label, with the paper's published averages as extra rows."""
    table = df.groupby("label")[list(METRICS)].mean().round(2) if len(df) else pd.DataFrame(columns=list(METRICS))
    table.insert(0, "n", df.groupby("label").size() if len(df) else [])
    if with_paper:
        paper = pd.DataFrame.from_dict(PAPER_STATS, orient="index")
        table = pd.concat([table, paper])
    return table


# ------------------------------------------------------------------ figures
def qa_by_type(qa: pd.DataFrame):
    import plotly.express as px

    counts = qa.groupby(["source", "type", "split"]).size().reset_index(name="count")
    return px.bar(counts, x="type", y="count", color="split", pattern_shape="source", barmode="stack", text="count",
                  title="Synthesized QA by type (train / held-out eval)")


def qa_by_hops(qa: pd.DataFrame):
    import plotly.express as px

    counts = qa.groupby(["source", "hops"]).size().reset_index(name="count")
    fig = px.bar(counts, x="hops", y="count", color="source", barmode="group", text="count",
                 title="QA by hop count (E2HQA: rewrite hops; CrawlQA: evidence pages)")
    fig.update_xaxes(dtick=1)
    return fig


def funnel(counts: dict[str, dict] | dict):
    """Filter funnel(s): `{label: funnel.json counts}` (or one counts dict) → input → validity → correctness →
    quality (= kept) per label."""
    import plotly.graph_objects as go

    if "input" in counts:
        counts = {"ours": counts}
    stages = ["input", "validity", "correctness", "quality"]
    fig = go.Figure()
    for label, c in counts.items():
        fig.add_trace(go.Funnel(name=label, y=stages, x=[c.get(s, 0) for s in stages], textinfo="value+percent initial"))
    fig.update_layout(title="Filter funnel: trajectories passing each stage")
    return fig


def distributions(df: pd.DataFrame, metrics: Iterable[str] = tuple(METRICS)):
    """A histogram per metric, one colour per label (ours vs WebDancer's samples), normalised to percent."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metrics = list(metrics)
    cols = 3
    rows = (len(metrics) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[METRICS.get(m, m) for m in metrics])
    colours = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a"]
    for j, (label, part) in enumerate(df.groupby("label", sort=False)):
        for i, m in enumerate(metrics):
            fig.add_trace(go.Histogram(x=part[m], name=label, legendgroup=label, showlegend=i == 0,
                                       histnorm="percent", marker_color=colours[j % len(colours)], opacity=0.6),
                          row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(barmode="overlay", title="Trajectory statistics (percent of trajectories per label)",
                      height=320 * rows)
    return fig


def means_bar(df: pd.DataFrame, metrics: Iterable[str] = ("actions", "think_tokens")):
    """Average actions and think tokens per label next to the paper's published averages."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    table = means(df)
    metrics = list(metrics)
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[f"mean {METRICS[m]}" for m in metrics])
    for i, m in enumerate(metrics):
        fig.add_trace(go.Bar(x=table.index, y=table[m], text=table[m].round(2), showlegend=False,
                             marker_color=["#ef553b" if "paper" in str(x) else "#636efa" for x in table.index]),
                      row=1, col=i + 1)
    fig.update_layout(title="Averages per trajectory vs the WebDancer paper (red: published figures)")
    return fig


def calls_by_tool(df: pd.DataFrame):
    import plotly.express as px

    long = df.groupby("label")[["search", "visit"]].sum().reset_index().melt(id_vars="label", var_name="tool",
                                                                          value_name="calls")
    return px.bar(long, x="label", y="calls", color="tool", barmode="group", text="calls",
                  title="search vs visit calls")


def pass_rate_by_type(df: pd.DataFrame):
    """Judge-correct and kept rates per QA type and label (trajectories without a verdict count as not passed)."""
    import plotly.express as px

    rates = (df.assign(correct=df["correct"].fillna(False).astype(float), kept=df["kept"].fillna(False).astype(float))
             .groupby(["label", "type"])[["correct", "kept"]].mean().mul(100).round(1).reset_index()
             .melt(id_vars=["label", "type"], var_name="rate", value_name="percent"))
    return px.bar(rates, x="type", y="percent", color="rate", facet_col="label", barmode="group", text="percent",
                  title="Pass rate by QA type (judge correct, kept by the funnel)")


def save(fig: Any, path: str | Path) -> Path:
    """Write `fig` as HTML; plotly.js goes once into the same folder (works offline, files stay small)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs="directory")
    return path


# ------------------------------------------------------------------ training (notebooks 03, 04)
# Both read a trainer's `log_history` (transformers' TrainerState).
def sft_loss(log_history: list[dict[str, Any]], title: str = "SFT training loss"):
    import plotly.graph_objects as go

    points = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    fig = go.Figure(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                               name="loss"))
    fig.update_layout(title=title, xaxis_title="optimizer step", yaxis_title="loss (assistant tokens)",
                      template="plotly_white")
    return fig


def _series(log_history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(h["step"], h[key]) for h in log_history if h.get(key) is not None and "step" in h]
    return [p[0] for p in points], [float(p[1]) for p in points]


def rolling_mean(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last `window` values (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def dapo_reward(log_history: list[dict[str, Any]], title: str = "DAPO reward", window: int = 5):
    """Reward per step (faint markers) and its rolling mean over `window` steps (lines): total (with overlong
    shaping), format and answer parts (unweighted means); the share of groups dynamic sampling kept (their rewards
    differ, so they carry a learning signal) on the right axis."""
    import plotly.graph_objects as go
    from plotly.colors import DEFAULT_PLOTLY_COLORS as colors
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    series = (("reward", "total (weighted)"), ("rewards/format_reward/mean", "format"),
              ("rewards/answer_reward/mean", "answer"), ("rewards/overlong_reward/mean", "overlong penalty"))
    for i, (key, name) in enumerate(series):
        x, y = _series(log_history, key)
        if not x:
            continue
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name=f"{name} (per step)", opacity=0.35,
                                 marker={"color": colors[i]}, legendgroup=name, showlegend=False), secondary_y=False)
        fig.add_trace(go.Scatter(x=x, y=rolling_mean(y, window), mode="lines", name=f"{name} ({window}-step mean)",
                                 line={"color": colors[i]}, legendgroup=name), secondary_y=False)
    x, y = _series(log_history, "dapo/kept_fraction")
    if x:
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="kept-group fraction", line={"dash": "dot",
                                 "color": "grey"}), secondary_y=True)
    fig.update_layout(title=title, xaxis_title="optimizer step", template="plotly_white")
    fig.update_yaxes(title_text="mean reward", secondary_y=False)
    fig.update_yaxes(title_text="kept-group fraction", range=[0, 1.05], secondary_y=True)
    return fig


def dapo_kept_groups(log_history: list[dict[str, Any]], title: str = "Dynamic sampling: groups with differing rewards"):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x, y = _series(log_history, "dapo/kept_fraction")
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name="kept fraction"), secondary_y=False)
    for key, name in (("dapo/kept_groups", "kept groups"), ("dapo/dropped_groups", "dropped groups"),
                      ("dapo/refills", "refills")):
        x, y = _series(log_history, key)
        fig.add_trace(go.Bar(x=x, y=y, name=name, opacity=0.5), secondary_y=True)
    fig.update_layout(title=title, xaxis_title="optimizer step", template="plotly_white", barmode="group")
    fig.update_yaxes(title_text="kept fraction", range=[0, 1.05], secondary_y=False)
    fig.update_yaxes(title_text="groups", secondary_y=True)
    return fig


# ------------------------------------------------------------------ evaluation (notebook 05)
# Both read the dict that `wdlib.evaluate.summarize` returns (eval/summary.json), the paper's rows included.
def eval_scores(summary: dict[str, Any], benchmark: str, with_published: bool = True):
    """Grouped bars: Pass@1 / Pass@k / Cons@k per level (and Avg.) for every evaluated model; the paper's published
    Pass@1 rows for the matching backbone as hatched bars."""
    import plotly.express as px

    k = summary["k"]
    bench = summary["benchmarks"][benchmark]
    metrics = metric_names(k)
    rows = []
    for label, res in bench["results"].items():
        for lv in bench["levels"] + ["avg"]:
            cell = res["avg"] if lv == "avg" else res["levels"].get(lv)
            for metric in metrics:
                v = (cell or {}).get(metric)
                if v is not None and v == v:  # NaN: no data
                    lo, hi = ((cell or {}).get("ci") or {}).get(metric) or (v, v)
                    rows.append({"level": "Avg." if lv == "avg" else LEVEL_TITLES.get(lv, lv), "metric": metric,
                                 "model": model_title(label), "score (%)": 100 * v, "source": "this run",
                                 "ci+": 100 * (hi - v), "ci-": 100 * (v - lo)})
    if with_published:
        backbones = {published_backbone(m.get("backbone", m["name"])) for m in summary["models"].values()} - {None}
        for row, by_bench in summary["published"]["pass@1"].items():  # "backbone | framework" → benchmark → level
            backbone, framework = row.split(" | ")
            if backbone in backbones and benchmark in by_bench:
                for lv, v in by_bench[benchmark].items():
                    rows.append({"level": "Avg." if lv == "avg" else LEVEL_TITLES.get(lv, lv), "metric": "pass@1",
                                 "model": f"{backbone} {framework} (published)", "score (%)": v,
                                 "source": "published", "ci+": 0.0, "ci-": 0.0})
    # error bars: the 95% bootstrap CI over questions (summary "ci"); published rows have none
    fig = px.bar(rows, x="level", y="score (%)", color="model", facet_col="metric", barmode="group",
                 error_y="ci+", error_y_minus="ci-", category_orders={"metric": metrics},
                 title=f"{BENCHMARK_TITLES.get(benchmark, benchmark)}: Pass@1, Pass@{k}, Cons@{k} (k={k} runs), "
                       "95% CI")
    fig.for_each_trace(lambda t: t.update(marker_pattern_shape="/") if t.name.endswith("(published)") else None)
    fig.update_yaxes(range=[0, 100])
    return fig


def eval_behaviour(summary: dict[str, Any]):
    """Invalid-output rate, turns and tool calls per trajectory, per model and benchmark."""
    import plotly.express as px

    rows = []
    for name, bench in summary["benchmarks"].items():
        for label, res in bench["results"].items():
            b = res["behaviour"]
            if b.get("trajectories"):
                for key, title in (("invalid_rate", "invalid output (%)"), ("avg_turns", "turns"),
                                   ("avg_tool_calls", "tool calls")):
                    rows.append({"benchmark": BENCHMARK_TITLES.get(name, name), "model": model_title(label),
                                 "stat": title, "value": 100 * b[key] if key == "invalid_rate" else b[key]})
    fig = px.bar(rows, x="benchmark", y="value", color="model", facet_col="stat", barmode="group",
                 title="Agent behaviour per trajectory")
    fig.update_yaxes(matches=None, showticklabels=True)
    return fig

"""Judge audit: how much of a score is the judge.

With `eval.judges` set, every answer is judged by the scoring judge (`judge` in each record: the benchmark's judge
mode, `eval.judge` / `judge.mode`, with `models.judge`) and by each audit judge (`judges[<name>]`). `audit` compares
every pair of judges over the answers both judged (all models and runs of a benchmark): how often they agree, Cohen's
kappa (agreement beyond what their base rates give by chance), and which answers they disagree on; `write_audit_page`
lists those answers with each judge's verdict and reply (`eval/figures/judge_audit.html`).

Cohen's kappa is written here (three lines): κ = (p_o − p_e) / (1 − p_e), p_o the observed agreement, p_e the
agreement expected from each judge's rate of "correct"; undefined (NaN) when both judges give one and the same verdict
to every answer.
"""

from __future__ import annotations

import html
import math
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

from wdlib.config import Config, ModelSpec
from wdlib.evaluate.benchmarks import Benchmark
from wdlib.labels import BENCHMARK_TITLES, model_title
from wdlib.trajectory import read_jsonl

SCORING = "scoring"  # the name of the judge whose verdicts make the scores


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Cohen's kappa of two judges' verdicts on the same answers (NaN when undefined, see the module docstring)."""
    if len(a) != len(b):
        raise ValueError(f"kappa needs verdicts on the same answers: {len(a)} vs {len(b)}")
    n = len(a)
    if not n:
        return math.nan
    observed = sum(x == y for x, y in zip(a, b)) / n
    rate_a, rate_b = sum(map(bool, a)) / n, sum(map(bool, b)) / n
    expected = rate_a * rate_b + (1 - rate_a) * (1 - rate_b)
    return math.nan if expected == 1 else (observed - expected) / (1 - expected)


def judge_names(cfg: Config) -> list[str]:
    names = [j.name for j in cfg.eval.judges]
    if SCORING in names or len(set(names)) < len(names):
        raise ValueError(f"{cfg.source}: eval.judges: names must be unique and not {SCORING!r} (the scoring judge)")
    return [SCORING] + names


def verdicts(record: dict) -> dict[str, bool | None]:
    """Judge name → its verdict on this record (None: not judged, unparsed, or an error)."""
    out = {SCORING: (record.get("judge") or {}).get("correct")}
    for name, v in (record.get("judges") or {}).items():
        out[name] = (v or {}).get("correct")
    return out


def _records(cfg: Config, benchmark: Benchmark, models: dict[str, ModelSpec]) -> list[tuple[str, int, dict]]:
    ids = {qa.id for qa in benchmark.items}
    return [(label, run, r) for label in models for run in range(cfg.eval.runs)
            for r in read_jsonl(cfg.paths.eval_run(benchmark.name, label, run)) if r.get("qa_id") in ids]


def audit(cfg: Config, benchmarks: dict[str, Benchmark], models: dict[str, ModelSpec]) -> dict[str, Any]:
    """Per benchmark: {"judges": [names], "pairs": [{"a", "b", "n", "agreement", "kappa", "disagreements"}]}, over
    the answers both judges of a pair gave a verdict on; {} without `eval.judges`."""
    if not cfg.eval.judges:
        return {}
    names = judge_names(cfg)
    out = {}
    for name, bench in benchmarks.items():
        seen = [verdicts(r) for _, _, r in _records(cfg, bench, models)]
        pairs = []
        for a, b in combinations(names, 2):
            both = [(v[a], v[b]) for v in seen if v.get(a) is not None and v.get(b) is not None]
            agree = sum(x == y for x, y in both)
            pairs.append({"a": a, "b": b, "n": len(both), "agreement": agree / len(both) if both else math.nan,
                          "kappa": cohen_kappa([x for x, _ in both], [y for _, y in both]),
                          "disagreements": len(both) - agree})
        out[name] = {"judges": names, "modes": {SCORING: "per eval.judge / judge.mode",
                                                **{j.name: j.mode for j in cfg.eval.judges}}, "pairs": pairs}
    return out


def audit_markdown(summary: dict[str, Any]) -> str:
    rows = ["| Benchmark | Judge A | Judge B | answers | agreement % | Cohen's kappa | disagreements |",
            "|---|---|---|---:|---:|---:|---:|"]
    for name, res in summary.get("judge_audit", {}).items():
        for p in res["pairs"]:
            agreement = "-" if p["agreement"] != p["agreement"] else f"{100 * p['agreement']:.1f}"
            kappa = "-" if p["kappa"] is None or p["kappa"] != p["kappa"] else f"{p['kappa']:.3f}"
            rows.append(f"| {BENCHMARK_TITLES.get(name, name)} | {p['a']} | {p['b']} | {p['n']} | {agreement} | "
                        f"{kappa} | {p['disagreements']} |")
    return "\n".join(rows) + "\n"


def write_audit_page(cfg: Config, benchmarks: dict[str, Benchmark], models: dict[str, ModelSpec],
                     out_dir: Path) -> Path:
    """eval/figures/judge_audit.html: every answer on which the judges disagree, with each judge's verdict, method
    and reply, per benchmark."""
    esc = html.escape
    names = judge_names(cfg)
    sections = []
    for name, bench in benchmarks.items():
        questions = {qa.id: qa for qa in bench.items}
        rows = []
        for label, run, record in _records(cfg, bench, models):
            seen = verdicts(record)
            if len({v for v in seen.values() if v is not None}) < 2:
                continue
            qa = questions[record["qa_id"]]
            cells = []
            for judge in names:
                v = record.get("judge") if judge == SCORING else (record.get("judges") or {}).get(judge)
                v = v or {}
                mark = {True: "✓", False: "✗", None: "?"}[v.get("correct")]
                cells.append(f'<td class="{ {True: "ok", False: "bad", None: "miss"}[v.get("correct")]}">{mark} '
                             f'<span class="meta">{esc(str(v.get("method")))}</span>'
                             f'<pre>{esc(str(v.get("raw") or "")[:600])}</pre></td>')
            rows.append(f"<tr><td>{esc(model_title(label))} · run {run + 1}</td><td>{esc(qa.question)}</td>"
                        f"<td>{esc(qa.answer)}</td><td>{esc(str(record.get('prediction') or '—'))}</td>"
                        f"{''.join(cells)}</tr>")
        head = "".join(f"<th>{esc(j)}</th>" for j in names)
        sections.append(f"<h3>{esc(BENCHMARK_TITLES.get(name, name))}: {len(rows)} answers with disagreeing "
                        f"verdicts</h3><table><tr><th>Model</th><th>Question</th><th>Gold</th><th>Prediction</th>"
                        f"{head}</tr>{''.join(rows)}</table>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Judge audit</title><style>
body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}} th{{background:#eee}}
.ok{{color:#060}} .bad{{color:#900}} .miss{{color:#888}} .meta{{color:#666;font-size:11px}}
pre{{white-space:pre-wrap;max-height:8em;overflow:auto;color:#333;font-size:11px}}
</style></head><body><h2>Judge audit: where the judges disagree</h2>
<p>Judges: {esc(", ".join(names))}. The scores use the {SCORING} judge.</p>{''.join(sections)}</body></html>"""
    path = out_dir / "judge_audit.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path

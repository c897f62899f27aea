"""Evaluate any QA file against a run's checkpoints, without touching the run's own results:

    python -m wdlib.evaluate --params params/mini.yaml --qa data/handwritten_qa.jsonl --out outputs/handwritten \\
        [--runs 3] [--models base,sft,dapo] [--compare sft:dapo,...]

Records: `question`, `answer`, optional `level` (.json list or .jsonl). The models are the run's (`eval.checkpoints`:
base = models.policy, sft / sft-rs / dapo = the run's checkpoints, `eval.extra_models` by name), with the params'
sampling and judge. OUT is a run folder of its own: trajectories in OUT/eval/<file>/<model>/run<r>.jsonl (resumable),
the full summary and tables in OUT/eval/, and OUT/summary.json: Pass@1 (mean over runs) per model and level, and the
paired gains (difference, 95% CI, p) of consecutive stages and of each `--compare before:after` pair (a model named
there is evaluated too, or read back when OUT already holds its runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wdlib import params
from wdlib.config import ParamsError
from wdlib.evaluate.benchmarks import BenchmarkError, load_qa_file
from wdlib.evaluate.report import summarize
from wdlib.evaluate.tables import write_tables
from wdlib.evaluate.run import eval_models, run_evaluation


def parse_pairs(text: str | None) -> list[tuple[str, str]]:
    """"a:b,c:d" → [("a", "b"), ("c", "d")]."""
    pairs = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        before, sep, after = (part.strip() for part in item.partition(":"))
        if not (sep and before and after) or before == after:
            raise BenchmarkError(f"--compare: {item.strip()!r} is not before:after (two different model labels)")
        pairs.append((before, after))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wdlib.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", required=True, help="the run's params YAML (its checkpoints, sampling, judge)")
    parser.add_argument("--qa", required=True, help="QA file: .json list or .jsonl of {question, answer, level?}")
    parser.add_argument("--out", required=True, help="output folder (a run folder of its own)")
    parser.add_argument("--runs", type=int, help="runs per question (default: the params' eval.runs)")
    parser.add_argument("--models", help="comma-separated labels among eval.checkpoints (base, sft, sft-rs, dapo) "
                        "and eval.extra_models")
    parser.add_argument("--compare", help="comma-separated before:after pairs of models to compare by a paired "
                        "bootstrap (e.g. sft:dapo,dapo:dapo-trial6)")
    args = parser.parse_args(argv)
    try:
        cfg = params.load(args.params)
        bench = load_qa_file(args.qa)
        models, skipped = eval_models(cfg)
        compare = parse_pairs(args.compare)
        if args.models:
            wanted = [m.strip() for m in args.models.split(",") if m.strip()]
            wanted += [m for pair in compare for m in pair if m not in wanted]
            unknown = [m for m in wanted if m not in models and m not in skipped]
            if unknown:
                raise BenchmarkError(f"--models: unknown {unknown}; this run has {sorted(models) + sorted(skipped)}")
            models = {m: models[m] for m in wanted if m in models}
            skipped = {m: why for m, why in skipped.items() if m in wanted}
        if not models:
            raise BenchmarkError(f"no model to evaluate: {skipped}")
        absent = sorted({m for pair in compare for m in pair if m not in models})
        if absent:
            raise BenchmarkError(f"--compare: {absent} cannot be evaluated here "
                                 f"({', '.join(f'{m}: {skipped[m]}' if m in skipped else m for m in absent)})")
        out = Path(args.out).resolve()
        update = {"run": cfg.run.model_copy(update={"output_dir": str(out.parent), "name": out.name})}
        if args.runs:
            update["eval"] = cfg.eval.model_copy(update={"runs": args.runs})
        out_cfg = cfg.model_copy(update=update)
    except (ParamsError, BenchmarkError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for label, why in skipped.items():
        print(f"[evaluate] skipping {label}: {why}")
    benchmarks = {bench.name: bench}
    run_evaluation(out_cfg, benchmarks, models)
    summary = summarize(out_cfg, benchmarks, models, skipped, compare=compare)
    write_tables(out_cfg, summary)
    results = summary["benchmarks"][bench.name]["results"]
    compact = {"qa": str(Path(args.qa).resolve()), "questions": len(bench.items), "runs": out_cfg.eval.runs,
               "levels": bench.level_counts(),
               "pass@1": {label: {"avg": res["avg"]["pass@1"],
                                  **{lv: cell["pass@1"] for lv, cell in res["levels"].items()}}
                          for label, res in results.items()},
               "gains": [{"from": g["from"], "to": g["to"], "n": g["n"], "pass@1": g["metrics"]["pass@1"]}
                         for g in summary["gains"][bench.name]]}
    (out / "summary.json").write_text(json.dumps(compact, indent=2))
    for label, scores in compact["pass@1"].items():
        print(f"{label}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in scores.items()))
    for gain in compact["gains"]:
        avg = gain["pass@1"]["avg"]
        print(f"{gain['from']} → {gain['to']}: pass@1 {100 * avg['diff']:+.1f} points "
              f"[{100 * avg['ci'][0]:+.1f}, {100 * avg['ci'][1]:+.1f}], p = {avg['p']:.3f} ({gain['n']} questions)")
    print(f"[evaluate] {out / 'summary.json'}; tables: {out_cfg.paths.eval_tables}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

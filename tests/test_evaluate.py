"""Evaluation: metrics on hand-computed cases, benchmark loaders, resume bookkeeping, tables and figures."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from wdlib import config, evaluate, params, plots
from wdlib.evaluate import Benchmark, BenchmarkError
from wdlib.trajectory import QAPair, append_jsonl, done_ids

HERE = Path(__file__).parent
GAIA_SAMPLE = HERE / "data" / "gaia_sample"
WEBWALKERQA = config.REPO_ROOT.parent / "shared" / "data" / "webwalkerqa" / "test.json"


def make_cfg(tmp_path: Path, **eval_section) -> config.Config:
    return params.from_dict({"run": {"name": "evaltest", "output_dir": str(tmp_path)},
                             "eval": {"benchmarks": ["local"], "runs": 3, **eval_section}})


# ------------------------------------------------------------------ metrics
T, F = True, False
MIXED = [[T, F, F],      # 1 of 3 right
         [T, T, T],      # 3 of 3
         [F, F, F],      # 0 of 3
         [F, T, None]]   # 1 of 3; third run missing (counts as wrong)


def test_pass_at_1_is_the_mean_of_the_runs():
    assert evaluate.run_accuracies(MIXED, 3) == [0.5, 0.5, 0.25]
    assert evaluate.pass_at_1(MIXED, 3) == pytest.approx((0.5 + 0.5 + 0.25) / 3)


def test_pass_at_k_is_any_run_right():
    assert evaluate.pass_at_k(MIXED) == pytest.approx(3 / 4)
    assert evaluate.pass_at_k([[F, F, F]]) == 0.0
    assert evaluate.pass_at_k([[F, F, T]]) == 1.0


def test_cons_at_k_paper_definition():
    # WebDancer §5: one right answer of three scores 1/3, two score 2/3, three score 1; averaged over questions.
    assert evaluate.cons_at_k([[T, F, F]], 3) == pytest.approx(1 / 3)
    assert evaluate.cons_at_k([[T, F, T]], 3) == pytest.approx(2 / 3)
    assert evaluate.cons_at_k([[T, T, T]], 3) == 1.0
    assert evaluate.cons_at_k(MIXED, 3) == pytest.approx((1 / 3 + 1 + 0 + 1 / 3) / 4)
    # a run that has not produced a result yet counts as wrong: k is the denominator, not the runs seen
    assert evaluate.cons_at_k([[T, T]], 3) == pytest.approx(2 / 3)


def test_all_at_k_and_score_summary():
    assert evaluate.all_at_k(MIXED, 3) == pytest.approx(1 / 4)
    s = evaluate.score(MIXED, 3)
    assert s["n"] == 4 and s["best_pass@1"] == 0.5 and s["pass@3"] == pytest.approx(0.75)
    assert set(s) >= {"pass@1", "best_pass@1", "pass@3", "cons@3", "all@k", "per_run_pass@1", "ci"}
    assert set(s["ci"]) == {"pass@1", "best_pass@1", "pass@3", "cons@3"}
    assert math.isnan(evaluate.pass_at_1([], 3)) and math.isnan(evaluate.cons_at_k([], 3))


def test_best_run_and_the_papers_cons_equal_to_mean_pass_at_1():
    rows = [[T, F, F], [T, T, F], [F, F, T], [T, F, F]]
    assert evaluate.best_pass_at_1(rows, 3) == pytest.approx(3 / 4)  # run 1: 3 of 4 right
    assert evaluate.pass_at_1(rows, 3) == pytest.approx((3 / 4 + 1 / 4 + 1 / 4) / 3)
    # the paper's Cons@3 (1/3 per right run, averaged over questions) is the same number as the mean Pass@1
    assert evaluate.cons_at_k(rows, 3) == pytest.approx(evaluate.pass_at_1(rows, 3))


def test_bootstrap_ci_over_questions_is_seeded_and_narrows_with_more_questions():
    rows = [[T, F, T], [F, F, F], [T, T, T], [F, T, F]] * 10  # 40 questions
    ci = evaluate.bootstrap_ci(rows, 3, samples=1000, seed=7)
    assert ci == evaluate.bootstrap_ci(rows, 3, samples=1000, seed=7)  # reproducible
    for metric in ("pass@1", "best_pass@1", "pass@3", "cons@3"):
        value = evaluate.statistics(3)[metric](evaluate.as_array(rows, 3))
        assert ci[metric][0] <= value <= ci[metric][1], metric
    wide = evaluate.bootstrap_ci(rows[:8], 3, samples=1000, seed=7)["pass@1"]
    assert wide[1] - wide[0] > ci["pass@1"][1] - ci["pass@1"][0]
    # the interval is close to the normal approximation for a mean of 40 per-question scores
    per_q = [sum(map(bool, r)) / 3 for r in rows]
    mean = sum(per_q) / 40
    se = (sum((x - mean) ** 2 for x in per_q) / 39 / 40) ** 0.5
    assert ci["pass@1"][0] == pytest.approx(mean - 1.96 * se, abs=0.03)
    assert ci["pass@1"][1] == pytest.approx(mean + 1.96 * se, abs=0.03)
    assert all(math.isnan(x) for x in evaluate.bootstrap_ci([], 3)["pass@1"])


def test_paired_bootstrap_difference_ci_and_p_value():
    base = [[F, F, F]] * 30 + [[T, T, T]] * 10
    better = [[T, T, T]] * 25 + [[F, F, F]] * 5 + [[T, T, T]] * 10  # 25 questions gained, none lost
    out = evaluate.paired_bootstrap(base, better, 3, "pass@1", samples=2000, seed=0)
    assert out["diff"] == pytest.approx(25 / 40) and out["n"] == 40
    assert 0 < out["ci"][0] < out["diff"] < out["ci"][1] and out["p"] < 0.001
    same = evaluate.paired_bootstrap(base, base, 3, "pass@1", samples=500)
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0] and same["p"] == 1.0
    # pairing matters: one gained and one lost question is no evidence either way
    noisy = evaluate.paired_bootstrap([[T, T, T], [F, F, F]] * 10, [[F, F, F], [T, T, T]] * 10, 3, samples=500)
    assert noisy["diff"] == 0 and noisy["p"] > 0.5
    assert evaluate.paired_bootstrap(base, better, 3, "pass@3", samples=200)["diff"] == pytest.approx(25 / 40)
    with pytest.raises(ValueError, match="same questions"):
        evaluate.paired_bootstrap(base, better[:-1], 3)


def test_cohen_kappa_on_hand_computed_cases():
    a = [T, T, T, T, F, F, F, F, T, F]
    b = [T, T, T, F, F, F, F, T, T, F]
    # observed 8/10; both rate 0.5 → expected 0.5; kappa = (0.8 - 0.5) / 0.5
    assert evaluate.cohen_kappa(a, b) == pytest.approx(0.6)
    assert evaluate.cohen_kappa(a, a) == 1.0 and evaluate.cohen_kappa(a, [not x for x in a]) == -1.0
    assert math.isnan(evaluate.cohen_kappa([T, T], [T, T])) and math.isnan(evaluate.cohen_kappa([], []))


def test_behaviour_counts_invalid_outputs_and_tool_calls():
    records = [
        {"finish_reason": "answer", "prediction": "x", "turns": 3,
         "tool_calls": [{"name": "search"}, {"name": "visit"}]},
        {"finish_reason": "max_turns", "prediction": None, "turns": 5, "tool_calls": [{"name": "search"}] * 4},
        {"finish_reason": "answer", "prediction": "  ", "turns": 1, "tool_calls": []},
    ]
    b = evaluate.behaviour(records)
    assert b["invalid_rate"] == pytest.approx(2 / 3)
    assert b["avg_turns"] == pytest.approx(3) and b["avg_tool_calls"] == pytest.approx(2)
    assert b["avg_search_calls"] == pytest.approx(5 / 3) and b["avg_visit_calls"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------ loaders
@pytest.mark.skipif(not WEBWALKERQA.is_file(), reason="shared WebWalkerQA copy not present")
def test_webwalkerqa_loader_reads_all_680():
    items = evaluate.load_webwalkerqa(WEBWALKERQA)
    assert len(items) == 680
    assert Counter(qa.difficulty for qa in items) == {"easy": 160, "medium": 280, "hard": 240}
    assert len({qa.id for qa in items}) == 680
    assert all(qa.question and qa.answer and qa.source == "webwalkerqa" for qa in items)
    assert all(qa.provenance["root_url"].startswith("http") for qa in items)


def test_gaia_loader_text_only_and_levels():
    items = evaluate.load_gaia(GAIA_SAMPLE)  # a folder: finds metadata.jsonl inside
    assert len(items) == 7  # two of nine have an attached file
    assert Counter(qa.difficulty for qa in items) == {"1": 2, "2": 3, "3": 2}  # int and str levels normalised
    qa = next(q for q in items if q.provenance["task_id"].endswith("0004"))
    assert qa.answer == "page_size, 4096" and qa.id == "gaia-" + qa.provenance["task_id"]
    assert qa.provenance["annotator_metadata"]["Number of steps"] == "3"
    assert len(evaluate.load_gaia(GAIA_SAMPLE / "metadata.jsonl", text_only=False)) == 9


def test_gaia_loader_task_id_subset(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# the curated subset\n00000000-0000-4000-8000-000000000001\n00000000-0000-4000-8000-000000000008\n")
    items = evaluate.load_gaia(GAIA_SAMPLE, task_ids=ids)
    assert [qa.difficulty for qa in items] == ["1", "3"]
    assert len(evaluate.load_gaia(GAIA_SAMPLE, task_ids=["00000000-0000-4000-8000-000000000002"])) == 1


def test_gaia_loader_bad_input_is_a_clear_error(tmp_path):
    bad = tmp_path / "metadata.jsonl"
    bad.write_text('{"task_id": "a", "Question": "q", "Level": 1, "Final answer": "x", "file_name": ""}\n{oops\n')
    with pytest.raises(BenchmarkError, match=r"metadata.jsonl:2: not valid JSON"):
        evaluate.load_gaia(bad)
    bad.write_text('{"task_id": "a", "Question": "q", "file_name": ""}\n')
    with pytest.raises(BenchmarkError, match="lacks Question / Final answer / Level"):
        evaluate.load_gaia(bad)
    with pytest.raises(BenchmarkError, match="does not exist"):
        evaluate.load_gaia(tmp_path / "nowhere")


def test_gaia_hub_offline_without_cache_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(BenchmarkError, match="gaia_path"):
        evaluate.load_gaia(None)


def test_local_set_levels_from_graded_qa(tmp_path):
    cfg = make_cfg(tmp_path)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"question": f"q{i}", "answer": "a", "source": "graded", "level": lv} for i, lv in enumerate([1, 2, 3, 1])]
    cfg.paths.qa_eval.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    bench = evaluate.load_benchmark("local", cfg)
    assert bench.levels == ["1", "2", "3"] and bench.level_counts() == {"1": 2, "2": 1, "3": 1}


def test_local_set_reads_qa_eval_or_falls_back(tmp_path):
    cfg = make_cfg(tmp_path)
    items, note = evaluate.load_local(cfg)  # no qa_eval.jsonl yet → WebDancer sample slice, marked
    assert note.startswith("fallback") and len(items) == 20
    assert all(qa.provenance["fallback"] for qa in items)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    append_jsonl(cfg.run_dir / "qa_eval.jsonl", [
        QAPair("Which module quotes shell strings?", "shlex", source="crawlqa", type="COUNT"),
        QAPair("Who wrote X?", "Y", source="e2hqa", type="e2hqa", difficulty=2),
    ])
    items, note = evaluate.load_local(cfg)
    assert note == "" and [qa.difficulty for qa in items] == ["COUNT", "2 hops"]


def test_take_evenly_covers_every_level():
    items = [QAPair(f"q{i}", "a", difficulty=lv) for i, lv in enumerate(["easy"] * 5 + ["medium"] * 5 + ["hard"] * 5)]
    chosen = evaluate.take_evenly(items, 4, ["easy", "medium", "hard"])
    assert [qa.difficulty for qa in chosen] == ["easy", "medium", "hard", "easy"]
    assert evaluate.take_evenly(items, None) == items


def test_load_benchmark_applies_limit(tmp_path):
    cfg = make_cfg(tmp_path, benchmarks=["gaia", "webwalkerqa"], gaia_path=str(GAIA_SAMPLE), limit=3,
                   webwalkerqa_path=str(WEBWALKERQA))
    loaded, skipped = evaluate.load_benchmarks(cfg)
    assert not skipped and loaded["gaia"].levels == ["1", "2", "3"]
    assert [qa.difficulty for qa in loaded["gaia"].items] == ["1", "2", "3"]
    assert "not the paper's 103" in loaded["gaia"].note
    cfg = make_cfg(tmp_path, benchmarks=["gaia"], gaia_path=str(tmp_path / "missing"))
    loaded, skipped = evaluate.load_benchmarks(cfg)
    assert not loaded and "does not exist" in skipped["gaia"]


# ------------------------------------------------------------------ judging and models
def test_verdict_uses_the_gaia_scorer_for_gaia_and_f1_elsewhere(tmp_path):
    from wdlib.aio import run_sync

    cfg = make_cfg(tmp_path)
    qa = QAPair("q", "Timsort; Peters")
    assert run_sync(evaluate.verdict("gaia", qa, "timsort;peters", cfg))["method"] == "gaia-scorer"
    assert run_sync(evaluate.verdict("gaia", qa, "timsort;peters", cfg))["correct"] is True
    # F1 credit would accept a partial list; the GAIA scorer does not
    assert run_sync(evaluate.verdict("gaia", qa, "Timsort by Tim Peters", cfg))["correct"] is False
    qa = QAPair("q", "The SUPPLY project is funded by the EU4Health program")
    assert run_sync(evaluate.verdict("webwalkerqa", qa, "funded by the EU4Health program", cfg))["correct"] is True
    assert run_sync(evaluate.verdict("webwalkerqa", qa, None, cfg))["correct"] is False


def test_eval_models_only_existing_checkpoints(tmp_path):
    cfg = make_cfg(tmp_path, checkpoints=["base", "sft", "dapo"],
                   extra_models={"gpt 4o": {"name": "gpt-4o", "backend": "openai", "base_url": "http://x/v1"}})
    models, skipped = evaluate.eval_models(cfg)
    assert list(models) == ["base", "gpt_4o"] and set(skipped) == {"sft", "dapo"}
    dapo = cfg.run_dir / "checkpoints" / "dapo"
    dapo.mkdir(parents=True)
    (dapo / "config.json").write_text("{}")
    models, skipped = evaluate.eval_models(cfg)
    assert models["dapo"].name == str(dapo) and models["dapo"].backend == cfg.models.policy.backend
    assert "sft" in skipped and "notebook 03" in skipped["sft"]
    assert models["dapo"].dtype == models["base"].dtype == cfg.models.policy.dtype  # eval.dtype "same"
    cfg.eval.dtype = "bfloat16"  # the policy and the run's checkpoints in eval.dtype; an extra model as given
    models, _ = evaluate.eval_models(cfg)
    assert models["dapo"].dtype == models["base"].dtype == "bfloat16" != cfg.models.policy.dtype
    assert models["gpt_4o"].dtype == "auto"


# ------------------------------------------------------------------ results → summary → tables/figures
def _fake_results(cfg, bench: Benchmark, label: str, right: dict[tuple[str, int], bool]) -> None:
    """Write run files as evaluate_model would, with chosen verdicts (no agent: this tests the bookkeeping)."""
    for run in range(cfg.eval.runs):
        for qa in bench.items:
            if (qa.id, run) not in right:
                continue  # a missing run
            ok = right[(qa.id, run)]
            append_jsonl(cfg.paths.eval_run(bench.name, label, run), [{
                "id": f"{qa.id}-{run}", "qa_id": qa.id, "question": qa.question, "gold": qa.answer,
                "prediction": qa.answer if ok else "wrong", "finish_reason": "answer", "turns": 2,
                "tool_calls": [{"name": "search", "arguments": {"query": ["x"]}}],
                "judge": {"correct": ok, "method": "rules"}, "messages": []}])


def test_stage_gains_compare_dapo_with_the_checkpoint_it_started_from(tmp_path):
    cfg = make_cfg(tmp_path)
    items = [QAPair(f"question {i}", f"answer {i}", source="gaia", difficulty="1") for i in range(4)]
    bench = Benchmark("gaia", items, ["1"])
    labels = ["base", "sft", "sft-rs", "dapo"]
    for n, label in enumerate(labels):  # stage n gets the first n questions right
        _fake_results(cfg, bench, label, {(qa.id, r): i < n for i, qa in enumerate(items) for r in range(3)})

    def pairs():
        gains = evaluate.stage_gains(cfg, bench, labels, samples=50)
        return [(g["from"], g["to"], g["metrics"]["pass@1"]["avg"]["diff"]) for g in gains]

    cfg.dapo.init = "sft"  # the rejection round's checkpoint evaluated beside, but DAPO started from the first pass
    assert pairs() == [("base", "sft", 0.25), ("sft", "sft-rs", 0.25), ("sft", "dapo", 0.5)]
    cfg.dapo.init = "sft-rs"
    assert pairs() == [("base", "sft", 0.25), ("sft", "sft-rs", 0.25), ("sft-rs", "dapo", 0.25)]


def test_summary_tables_and_figures_on_synthetic_results(tmp_path):
    cfg = make_cfg(tmp_path)
    items = [QAPair(f"question {i}", f"answer {i}", source="gaia", difficulty=lv)
             for i, lv in enumerate(["1", "1", "2", "2", "3"])]
    bench = Benchmark("gaia", items, ["1", "2", "3"])
    ids = [qa.id for qa in items]
    # base: q0 right in run 0 only; q2 right in all runs. sft: q0, q1 always right; q4 right in runs 0,1; run 2 of
    # q3 missing.
    base = {(i, r): (i == ids[0] and r == 0) or i == ids[2] for i in ids for r in range(3)}
    sft = {(i, r): i in ids[:2] or (i == ids[4] and r < 2) for i in ids for r in range(3) if (i, r) != (ids[3], 2)}
    _fake_results(cfg, bench, "base", base)
    _fake_results(cfg, bench, "sft", sft)
    models = {"base": cfg.models.policy, "sft": cfg.models.policy.model_copy(update={"name": "ckpt/sft"})}

    # the resume bookkeeping sees what is done
    assert done_ids(cfg.paths.eval_run("gaia", "sft", 2), "qa_id") == set(ids) - {ids[3]}

    summary = evaluate.summarize(cfg, {"gaia": bench}, models)
    saved = json.loads((cfg.run_dir / "eval" / "summary.json").read_text())
    assert saved["benchmarks"]["gaia"]["results"]["sft"]["coverage"] == {"done": 14, "expected": 15, "judged": 14}
    base_res, sft_res = (summary["benchmarks"]["gaia"]["results"][m] for m in ("base", "sft"))
    assert base_res["levels"]["1"]["pass@1"] == pytest.approx((1 / 2 + 0 + 0) / 3)
    assert base_res["levels"]["1"]["pass@3"] == pytest.approx(1 / 2)
    assert base_res["avg"]["pass@1"] == pytest.approx((2 / 5 + 1 / 5 + 1 / 5) / 3)
    assert sft_res["levels"]["3"]["cons@3"] == pytest.approx(2 / 3)
    assert sft_res["avg"]["pass@3"] == pytest.approx(3 / 5)
    assert sft_res["avg"]["cons@3"] == pytest.approx((1 + 1 + 0 + 0 + 2 / 3) / 5)

    df = evaluate.paper_table(summary)
    assert list(df.columns) == [("GAIA", "Level 1"), ("GAIA", "Level 2"), ("GAIA", "Level 3"), ("GAIA", "Avg.")]
    ours = df.xs("this run (k=3)", level="Source")
    policy = cfg.models.policy.name  # a checkpoint's row is labelled with the backbone it was trained from
    assert ours.loc[(policy, "SFT"), ("GAIA", "Level 1")] == pytest.approx(100.0)
    published = df.xs(evaluate.PUBLISHED_LABEL, level="Source")
    assert published.loc[("Qwen-2.5-7B", "WebDancer"), ("GAIA", "Avg.")] == 31.0
    assert published.loc[("QwQ-32B", "Vanilla ReAct"), ("GAIA", "Level 3")] == 16.6
    md = evaluate.table_markdown(df)
    assert "| GAIA Level 1 |" in md and f"| {policy} | SFT | this run (k=3) | 100.0 |" in md
    assert evaluate.PUBLISHED_LABEL in evaluate.table_markdown(evaluate.paper_table(summary, "best_pass@1"))
    assert evaluate.PUBLISHED_LABEL not in evaluate.table_markdown(evaluate.paper_table(summary, "cons@3"))

    # every cell carries its CI; the best run beside the mean
    assert sft_res["avg"]["best_pass@1"] == pytest.approx(3 / 5)  # runs 0 and 1: q0, q1, q4
    lo, hi = base_res["avg"]["ci"]["pass@1"]
    assert lo <= base_res["avg"]["pass@1"] <= hi and 0 <= lo < hi <= 1
    assert saved["benchmarks"]["gaia"]["results"]["base"]["levels"]["1"]["ci"]["pass@3"][1] == 1.0
    assert saved["bootstrap"]["samples"] == cfg.eval.bootstrap_samples and saved["judge"]["modes"] == {"gaia": "rules"}
    # gains: sft over base on the 4 questions both completed (q3 lacks sft's run 3)
    (gain,) = saved["gains"]["gaia"]
    assert (gain["from"], gain["to"], gain["n"]) == ("base", "sft", 4)
    # base per question: 1/3, 0, 1, -(q3 excluded), 0 → mean 4/12; sft: 1, 1, 0, 2/3 → 8/12
    assert gain["metrics"]["pass@1"]["avg"]["diff"] == pytest.approx((1 + 1 + 0 + 2 / 3) / 4 - (1 / 3 + 0 + 1 + 0) / 4)
    assert set(gain["metrics"]) == {"pass@1", "best_pass@1", "pass@3"} and "1" in gain["metrics"]["pass@1"]

    tables = evaluate.write_tables(cfg, summary).read_text()
    assert "Cons@3" in tables and "invalid %" in tables and "Pass@1, best of 3 runs" in tables
    assert "Episodes: temperature 0.6, top-p 0.95, at most 20 turns; an episode ends after 2 malformed turns" in tables
    ci = base_res["levels"]["1"]["ci"]["pass@1"]
    assert f"| {100 * base_res['levels']['1']['pass@1']:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] |" in tables
    assert "| GAIA | ReAct (base) → SFT | pass@1 | Avg. | +" in tables and "unparsed replies" in tables
    fig = plots.eval_scores(summary, "gaia")
    assert {t.name for t in fig.data} >= {"ReAct (base)", "SFT"}
    base_trace = next(t for t in fig.data if t.name == "ReAct (base)" and "Avg." in list(t.x))
    i = list(base_trace.x).index("Avg.")  # error bars are the CI: upper end - value, value - lower end
    assert base_trace.error_y.array[i] == pytest.approx(100 * (hi - base_res["avg"]["pass@1"]))
    assert base_trace.error_y.arrayminus[i] == pytest.approx(100 * (base_res["avg"]["pass@1"] - lo))
    assert plots.save(fig, evaluate.figures_dir(cfg) / "gaia.html").stat().st_size > 1000
    cfg.models.policy.name = "Qwen/Qwen2.5-7B-Instruct"  # a backbone the paper reports: its rows join the chart
    fig = plots.eval_scores(evaluate.summarize(cfg, {"gaia": bench}, models, write=False), "gaia")
    published = [t for t in fig.data if t.name.endswith("(published)")]
    assert {t.name for t in published} == {"Qwen-2.5-7B Vanilla ReAct (published)", "Qwen-2.5-7B WebDancer (published)"}
    assert published[0].marker.pattern.shape == "/"
    plots.eval_behaviour(summary)
    page = evaluate.write_drilldown(cfg, bench, models).read_text()
    assert "question 3" in page and "run 3: not run" in page and "✓" in page
    assert 'href="trajectories/gaia_sft_run0.html#t0"' in page  # the trajectory viewer's page for that run
    assert (evaluate.figures_dir(cfg) / "trajectories" / "gaia_sft_run0.html").is_file()


def test_published_backbone_mapping():
    assert evaluate.published_backbone("Qwen/Qwen2.5-7B-Instruct") == "Qwen-2.5-7B"
    assert evaluate.published_backbone("Qwen/Qwen2.5-32B-Instruct") == "Qwen-2.5-32B"
    assert evaluate.published_backbone("Qwen/QwQ-32B") == "QwQ-32B"
    assert evaluate.published_backbone("embedded:smollm2-135m") is None
    # the published rows are internally consistent with GAIA's 39/52/12 level sizes (micro average)
    for (backbone, framework), res in evaluate.PUBLISHED.items():
        if backbone != "GPT-4o":  # the paper's GPT-4o row does not add up; kept as printed
            g = res["gaia"]
            assert (39 * g["1"] + 52 * g["2"] + 12 * g["3"]) / 103 == pytest.approx(g["avg"], abs=0.15)


# ------------------------------------------------------------------ end to end: agent + real local web + resume
def test_run_evaluation_end_to_end_and_resume(tmp_path):
    """A model endpoint on loopback (the stand-in for a GPU server) drives the real agent against the real local
    web: each question gets one search, then an answer (right for two questions, wrong for one). Files, verdicts,
    metrics and resume are checked."""
    from openai_loopback import LoopbackOpenAI, search_then_answer

    def answer(body):
        question = body["messages"][1]["content"]
        return "shlex" if "shell" in question else "Peters" if "Timsort" in question else "no idea"

    handler = search_then_answer(answer, query="shlex quote")

    cfg = params.load("params/ci.yaml")
    cfg.run.output_dir = str(tmp_path)
    cfg.eval.runs, cfg.eval.limit, cfg.eval.checkpoints = 2, None, ["base"]
    cfg.run_dir.mkdir(parents=True)
    append_jsonl(cfg.run_dir / "qa_eval.jsonl", [
        QAPair("Which module quotes shell strings?", "shlex", source="crawlqa", type="COUNT"),
        QAPair("Who invented Timsort?", "Tim Peters", source="e2hqa", difficulty=1),
        QAPair("What is the answer to this unanswerable question?", "forty-two", source="e2hqa", difficulty=1),
    ])
    with LoopbackOpenAI(handler) as server:
        cfg.models.policy = config.ModelSpec(name="loopback", backend="openai", base_url=server.base_url,
                                             context_length=4096, max_new_tokens=64)
        benchmarks, skipped = evaluate.load_benchmarks(cfg)
        models, _ = evaluate.eval_models(cfg)
        report = evaluate.run_evaluation(cfg, benchmarks, models, progress=False)
        assert report["base"]["local"]["new"] == 6 and len(server.requests) == 12  # 3 questions × 2 runs × 2 turns

        run0 = cfg.paths.eval_run("local", "base", 0)
        records = [json.loads(line) for line in run0.read_text().splitlines()]
        assert {r["eval"]["level"] for r in records} == {"COUNT", "1 hop"}
        assert all(r["tool_calls"][0]["name"] == "search" and "docs.python.org" in r["messages"][3]["content"]
                   for r in records)  # the real search tool answered
        # under rules, "Peters" is a partial answer to "Tim Peters": F1 0.67 ≥ 0.6 counts it right
        assert sorted(r["judge"]["correct"] for r in records) == [False, True, True]

        summary = evaluate.summarize(cfg, benchmarks, models)
        avg = summary["benchmarks"]["local"]["results"]["base"]["avg"]
        assert avg["pass@1"] == pytest.approx(2 / 3) and avg["pass@2"] == pytest.approx(2 / 3)
        assert summary["benchmarks"]["local"]["results"]["base"]["behaviour"]["avg_tool_calls"] == 1.0
        # the episode rule the params ask for reached every episode and the summary (default: 2 malformed in a row)
        assert {r["sampling"]["max_format_errors"] for r in records} == {2} == {summary["sampling"]["max_format_errors"]}

        # resume: nothing left → the model is not even called; a lost line and a lost verdict are redone only
        assert evaluate.run_evaluation(cfg, benchmarks, models, progress=False)["base"]["local"]["new"] == 0
        assert len(server.requests) == 12
        lines = run0.read_text().splitlines()
        first = json.loads(lines[0])
        first["judge"] = {"correct": None, "method": "error"}
        run0.write_text("\n".join([json.dumps(first)] + lines[2:]) + "\n")  # line 2 lost, line 1 unjudged
        counts = evaluate.run_evaluation(cfg, benchmarks, models, progress=False)["base"]["local"]
        assert counts["new"] == 1 and counts["rejudged"] == 1 and len(server.requests) == 14
        assert evaluate.summarize(cfg, benchmarks, models, write=False)["benchmarks"]["local"]["results"][
            "base"]["avg"]["pass@1"] == pytest.approx(2 / 3)


def test_equivalence_judge_per_benchmark_and_judge_audit_end_to_end(tmp_path):
    """Policy and judge both on loopback servers (stand-ins for vLLM and a judge endpoint), the real agent and local
    web: the local set is judged by the equivalence judge (eval.judge), each answer also by an audit judge (rules);
    the summary reports unparsed judge replies and the judges' agreement, and the audit page lists disagreements."""
    from openai_loopback import LoopbackOpenAI, completion, search_then_answer

    answers = {"shell": "the shlex standard library module", "Timsort": "Tim Peters", "unanswerable": "maybe 41"}
    policy = search_then_answer(lambda body: next(a for key, a in answers.items()
                                                  if key in body["messages"][1]["content"]), query="shlex")

    def judge(body):
        prompt = body["messages"][-1]["content"]
        if "Predicted answer: the shlex standard library module" in prompt:
            return 200, completion("**Correct**")  # rules (F1 0.4 < 0.6) would say wrong: a disagreement
        if "maybe 41" in prompt:
            return 200, completion("Hmm, hard to say.")  # unparseable
        return 200, completion("Incorrect")

    cfg = params.load("params/ci.yaml")
    cfg.run.output_dir = str(tmp_path)
    cfg.eval.runs, cfg.eval.limit, cfg.eval.checkpoints = 1, None, ["base"]
    cfg.eval.judge = {"local": "equivalence"}
    cfg.eval.judges = [config.AuditJudge(name="rules-f1", mode="rules")]
    cfg.judge.rules_gold_in_answer = False
    cfg.run_dir.mkdir(parents=True)
    append_jsonl(cfg.paths.qa_eval, [QAPair("Which module quotes shell strings?", "shlex", source="crawlqa"),
                                     QAPair("Who invented Timsort?", "Tim Peters", source="e2hqa"),
                                     QAPair("What is the unanswerable number?", "forty-two", source="e2hqa")])
    with LoopbackOpenAI(policy) as policy_server, LoopbackOpenAI(judge) as judge_server:
        cfg.models.policy = config.ModelSpec(name="loopback", backend="openai", base_url=policy_server.base_url,
                                             context_length=4096, max_new_tokens=64)
        cfg.models.judge = config.ModelSpec(name="judge-72b", backend="openai", base_url=judge_server.base_url)
        benchmarks, _ = evaluate.load_benchmarks(cfg)
        models, _ = evaluate.eval_models(cfg)
        evaluate.run_evaluation(cfg, benchmarks, models, progress=False)
        assert len(judge_server.requests) == 2  # "Tim Peters" matched by rule: no call
        records = {r["prediction"]: r for r in (json.loads(x) for x in
                                                 cfg.paths.eval_run("local", "base", 0).read_text().splitlines())}
        shlex = records["the shlex standard library module"]
        assert shlex["judge"]["correct"] is True and shlex["judge"]["mode"] == "equivalence"
        assert shlex["judge"]["model"] == "judge-72b" and shlex["judge"]["prompt_version"] == "equivalence-v1"
        assert shlex["judges"]["rules-f1"]["correct"] is False and records["Tim Peters"]["judge"]["method"] == \
            "rule-match"
        assert records["maybe 41"]["judge"]["unparsed"] and records["maybe 41"]["judge"]["correct"] is None

        summary = evaluate.summarize(cfg, benchmarks, models)
        judging = summary["benchmarks"]["local"]["results"]["base"]["judging"]
        assert judging["unparsed"] == 1 and judging["models"] == ["judge-72b"]
        assert summary["benchmarks"]["local"]["results"]["base"]["avg"]["pass@1"] == pytest.approx(2 / 3)
        (pair,) = summary["judge_audit"]["local"]["pairs"]
        # both judged 2 answers (the unparsed one has no scoring verdict): agree on Tim Peters, not on shlex
        assert (pair["a"], pair["b"], pair["n"], pair["disagreements"]) == ("scoring", "rules-f1", 2, 1)
        page = (cfg.paths.eval_figures / "judge_audit.html").read_text()
        assert "the shlex standard library module" in page and "Timsort" not in page
        tables = evaluate.write_tables(cfg, summary).read_text()
        assert "Judge audit" in tables and "| Local web | scoring | rules-f1 | 2 |" in tables

        # resume: the unparsed verdict is asked again (the judge may answer this time); nothing else is
        evaluate.run_evaluation(cfg, benchmarks, models, progress=False)
        assert len(judge_server.requests) == 3 and len(policy_server.requests) == 6


def test_cli_evaluates_any_qa_file_per_level_without_touching_the_run(tmp_path):
    """`python -m wdlib.evaluate --params P --qa FILE --out DIR`: a loopback model answers two of three questions
    right; DIR/summary.json has Pass@1 per model and level; the run's own eval folder is left alone."""
    from openai_loopback import LoopbackOpenAI, search_then_answer

    from wdlib.evaluate.__main__ import main

    def answer(body):
        question = body["messages"][1]["content"]
        return {"capital": "Lima", "author": "Jane Austen"}.get(
            next((k for k in ("capital", "author") if k in question), ""), "no idea")

    handler = search_then_answer(answer)

    qa = tmp_path / "mine.json"
    qa.write_text(json.dumps([{"question": "Which city is the capital of Peru?", "answer": "Lima", "level": 1},
                              {"question": "Who is the author of Emma?", "answer": "Jane Austen", "level": 2},
                              {"question": "What is unknowable?", "answer": "42", "level": 2}]))
    with LoopbackOpenAI(handler) as server:
        params = tmp_path / "p.yaml"
        params.write_text(f"extends: {config.PARAMS_DIR / 'ci.yaml'}\nrun: {{name: r, output_dir: {tmp_path}}}\n"
                          f"models: {{policy: {{name: loop, backend: openai, base_url: '{server.base_url}', "
                          f"context_length: 4096, max_new_tokens: 64}}}}\n"
                          "eval: {checkpoints: [base, sft], max_turns: 3}\n")
        out = tmp_path / "out"
        assert main(["--params", str(params), "--qa", str(qa), "--out", str(out), "--runs", "2"]) == 0
        assert len(server.requests) == 12  # 3 questions × 2 runs × 2 turns
    summary = json.loads((out / "summary.json").read_text())
    assert summary["questions"] == 3 and summary["runs"] == 2 and summary["levels"] == {"1": 1, "2": 2}
    assert summary["pass@1"] == {"base": {"avg": pytest.approx(2 / 3), "1": 1.0, "2": 0.5}}  # sft: no checkpoint
    assert (out / "eval" / "mine" / "base" / "run1.jsonl").is_file()
    assert not (tmp_path / "r" / "eval").exists()
    assert main(["--params", str(params), "--qa", str(qa), "--out", str(out), "--models", "dpo"]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no answer"}\n')
    assert main(["--params", str(params), "--qa", str(bad), "--out", str(out)]) == 2


def test_cli_compares_any_two_models_by_a_paired_bootstrap(tmp_path):
    """`--compare weak:strong`: both models are evaluated (or read back), and summary.json carries the paired gain;
    a malformed pair or a model that cannot be evaluated is a clear error (exit 2)."""
    from openai_loopback import LoopbackOpenAI, search_then_answer

    from wdlib.evaluate.__main__ import main

    gold = {"capital": "Lima", "author": "Jane Austen", "unknowable": "42"}

    def answer(body):  # the "strong" model knows every answer, the "weak" one none
        key = next(k for k in gold if k in body["messages"][1]["content"])
        return gold[key] if body["model"] == "strong" else "no idea"

    handler = search_then_answer(answer)

    qa = tmp_path / "mine.jsonl"
    qa.write_text("".join(json.dumps({"question": q, "answer": a, "level": lv}) + "\n" for q, a, lv in [
        ("Which city is the capital of Peru?", "Lima", 1), ("Who is the author of Emma?", "Jane Austen", 2),
        ("What is unknowable?", "42", 2)]))
    with LoopbackOpenAI(handler) as server:
        spec = (f"{{backend: openai, base_url: '{server.base_url}', context_length: 4096, max_new_tokens: 64}}")
        params = tmp_path / "p.yaml"
        params.write_text(f"extends: {config.PARAMS_DIR / 'ci.yaml'}\nrun: {{name: r, output_dir: {tmp_path}}}\n"
                          f"models: {{policy: {{name: loop, backend: openai, base_url: '{server.base_url}'}}}}\n"
                          "eval: {checkpoints: [sft], max_turns: 3, extra_models: {"
                          f"weak: {{name: weak, {spec[1:-1]}}}, strong: {{name: strong, {spec[1:-1]}}}}}}}\n")
        out = tmp_path / "out"
        argv = ["--params", str(params), "--qa", str(qa), "--out", str(out), "--runs", "2"]
        assert main(argv + ["--models", "weak", "--compare", "weak:strong"]) == 0
        assert len(server.requests) == 24  # both models: 3 questions × 2 runs × 2 turns
        assert main(argv + ["--compare", "weak:strong"]) == 0  # read back: nothing asked again
        assert len(server.requests) == 24
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pass@1"]["weak"]["avg"] == 0.0 and summary["pass@1"]["strong"]["avg"] == 1.0
    (gain,) = summary["gains"]
    assert (gain["from"], gain["to"], gain["n"]) == ("weak", "strong", 3)
    assert gain["pass@1"]["avg"]["diff"] == pytest.approx(1.0) and gain["pass@1"]["avg"]["ci"][0] > 0
    assert gain["pass@1"]["2"]["diff"] == pytest.approx(1.0)
    assert "| weak → strong | pass@1 | Avg. | +100.0 |" in (out / "eval" / "tables.md").read_text()
    for bad in ("weak", "weak:weak", "weak:sft"):  # not a pair; the same model; sft has no checkpoint here
        assert main(argv + ["--compare", bad]) == 2

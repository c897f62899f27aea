"""wdlib.synthesis.filters: each stage of the funnel on hand-made good and bad trajectories, the n-gram rule on exact counts,
the LLM quality review (canned-reply client standing in for a paid judge API), and WebDancer's released samples."""

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from wdlib import params
from wdlib.synthesis.filters import (
    answer_support,
    answer_supported,
    check_quality,
    funnel_counts,
    max_ngram_count,
    run_funnel,
)
from wdlib.trajectory import Trajectory, load_webdancer

SAMPLES = Path(__file__).resolve().parents[2] / "shared/data/webdancer-samples/sample_traj.jsonl"
PHRASE = "alpha beta gamma delta epsilon zeta eta theta iota kappa"  # exactly 10 words


def search(think="I need the winner; search first.", query="Epsom Derby 1964 winner"):
    return (f"<think>\n{think}\n</think>\n<tool_call>\n"
            f'{{"name": "search", "arguments": {{"query": ["{query}"]}}}}\n</tool_call>')


def answer(text="Epsom Derby", think="The results say Santa Claus won the Epsom Derby."):
    return f"<think>\n{think}\n</think>\n<answer>{text}</answer>"


def make(turns, gold="Epsom Derby", observation="Santa Claus won the 1964 Epsom Derby at Epsom Downs.", **kw):
    messages = [{"role": "system", "content": "You are a web agent."},
                {"role": "user", "content": "Which race did Santa Claus win in 1964?"}]
    for i, turn in enumerate(turns):
        messages.append({"role": "assistant", "content": turn})
        if i < len(turns) - 1:
            messages.append({"role": "user", "content": f"<tool_response>\n{observation}\n</tool_response>"})
    last = turns[-1]
    prediction = last.split("<answer>")[1].split("</answer>")[0] if "<answer>" in last else None
    return Trajectory(question="Which race did Santa Claus win in 1964?", messages=messages, gold=gold,
                      prediction=prediction, **kw)


def repeated_think(k):
    """A think text in which PHRASE occurs exactly k times and no other 10-gram repeats (unique fillers)."""
    return " ".join(f"{PHRASE} filler{i}" for i in range(k))


@pytest.fixture
def cfg():
    return params.load("params/smoke.yaml")


def funnel(trajs, cfg, **kw):
    kept, counts = run_funnel(trajs, cfg, progress=False, **kw)
    return kept, counts


# ------------------------------------------------------------------ stages on hand-made trajectories
def test_good_trajectory_passes_every_stage(cfg):
    traj = make([search(), answer()])
    kept, counts = funnel([traj], cfg)
    assert kept == [traj]
    assert traj.filters["kept"] is True and traj.filters["dropped_by"] is None
    assert all(traj.filters[s]["passed"] is True for s in ("validity", "correctness", "quality"))
    assert traj.judge["correct"] is True and traj.judge["method"] == "rules"
    assert counts["input"] == counts["kept"] == 1


@pytest.mark.parametrize("turns, reason", [
    ([search().replace('"query"', "query"), answer()], "not valid JSON"),
    ([search().replace('"search"', '"google"'), answer()], "unknown tool"),
    ([search().replace('"query": ["Epsom Derby 1964 winner"]', '"q2": "x"'), answer()], "missing required"),
    ([search(), search()], "tool call never answered"),
    ([search(), answer().replace("<think>", "<thinking>").replace("</think>", "</thinking>")], "no <think>"),
])
def test_validity_drops_malformed_trajectories(cfg, turns, reason):
    traj = make(turns)
    kept, counts = funnel([traj], cfg)
    assert kept == [] and traj.filters["dropped_by"] == "validity"
    assert reason in traj.filters["validity"]["reason"]
    assert traj.filters["correctness"]["passed"] is None and traj.filters["quality"]["passed"] is None
    assert traj.judge == {}  # never judged: the judge is not spent on invalid trajectories
    assert counts == {"input": 1, "validity": 0, "correctness": 0, "quality": 0, "kept": 0,
                      "dropped": {"validity": {"format": 1}, "correctness": {}, "quality": {}}}


def test_correctness_drops_wrong_answers_and_missing_gold(cfg):
    wrong = make([search(), answer("Grand National")])
    no_gold = make([search(), answer()], gold=None)
    kept, counts = funnel([wrong, no_gold], cfg)
    assert kept == []
    assert wrong.filters["dropped_by"] == "correctness" and wrong.filters["correctness"]["kind"] == "wrong"
    assert "Grand National" in wrong.filters["correctness"]["reason"]
    assert no_gold.filters["correctness"]["kind"] == "no-gold"
    assert counts["validity"] == 2 and counts["correctness"] == 0
    assert counts["dropped"]["correctness"] == {"wrong": 1, "no-gold": 1}


def test_existing_verdicts_are_reused_unless_rejudge(cfg):
    traj = make([search(), answer("The race was the Derby at Epsom")], judge={"correct": True, "method": "released"})
    assert len(funnel([traj], cfg)[0]) == 1  # rules would reject this wording; the stored verdict stands
    assert traj.judge["method"] == "released"
    assert funnel([traj], cfg, rejudge=True)[0] == []
    assert traj.judge["method"] == "rules" and traj.filters["dropped_by"] == "correctness"


def test_quality_drops_answers_no_tool_response_supports(cfg):
    unsupported = make([search(), answer("Grand National")], gold="Grand National")  # right by gold, unseen
    no_tools = make([answer()])  # answered from memory
    kept, _ = funnel([unsupported, no_tools], cfg)
    assert kept == []
    for traj in (unsupported, no_tools):
        assert traj.filters["dropped_by"] == "quality" and traj.filters["quality"]["kind"] == "unsupported-answer"
    assert "no tool response" in no_tools.filters["quality"]["reason"]
    cfg.filters.require_supported_answer = False
    assert len(funnel([unsupported, no_tools], cfg)[0]) == 2


def test_answer_support_definition():
    obs = ["<tool_response>\nSanta Claus won the 1964 Epsom Derby; prize £72,067.\n</tool_response>"]
    assert answer_support("The Epsom Derby", obs) == 1.0  # phrase after normalisation (article dropped)
    assert answer_support("72,067", obs) == 1.0  # numbers compare without separators
    assert answer_support("Derby at Epsom Downs", obs) == pytest.approx(2 / 3)  # content words: derby epsom downs
    assert answer_support("Grand National", obs) == 0.0
    assert answer_support("anything", []) == 0.0
    # the gold counts too: a paraphrased prediction is supported when the gold is in the evidence
    assert answer_supported("Santa's Derby win", "Epsom Derby", obs) == (True, 1.0)
    assert answer_supported("Grand National", "Grand National", obs, min_recall=0.5) == (False, 0.0)


# ------------------------------------------------------------------ the n-gram rule, exact counts
def test_max_ngram_count_exact():
    assert max_ngram_count(repeated_think(4), 10) == (4, PHRASE)
    assert max_ngram_count(repeated_think(5), 10) == (5, PHRASE)
    assert max_ngram_count(repeated_think(1), 10)[0] == 1
    assert max_ngram_count("too short", 10) == (0, "")
    assert max_ngram_count("A b, A B; a-b", 2) == (3, "a b")  # lowercase words; punctuation is not a word
    # counted within turns and summed over turns, never across a boundary
    words = PHRASE.split()
    halves = [" ".join(words[:5]), " ".join(words[5:])]
    assert max_ngram_count(halves * 3, 10) == (0, "")
    assert max_ngram_count([PHRASE] * 3 + [repeated_think(2)], 10) == (5, PHRASE)


def test_ngram_rule_allows_4_repeats_and_drops_5(cfg):
    assert (cfg.filters.ngram, cfg.filters.max_ngram_repeats) == (10, 4)
    ok = make([search(think=repeated_think(2)), answer(think=repeated_think(2))])  # 4 in all, across turns
    bad = make([search(think=repeated_think(2)), answer(think=repeated_think(3))])  # 5
    kept, counts = funnel([ok, bad], cfg)
    assert kept == [ok]
    assert ok.filters["quality"]["max_ngram_repeats"] == 4
    assert bad.filters["quality"]["kind"] == "ngram-repeat" and bad.filters["quality"]["max_ngram_repeats"] == 5
    assert "10-gram repeated 5 times (max 4)" in bad.filters["quality"]["reason"]
    assert counts["dropped"]["quality"] == {"ngram-repeat": 1}


def test_ngram_rule_follows_params(cfg):
    cfg.filters.ngram, cfg.filters.max_ngram_repeats = 3, 1
    traj = make([search(think="look it up, look it up"), answer()])
    verdict = check_quality(traj, cfg)
    assert verdict["passed"] is False and verdict["max_ngram_repeats"] == 2
    cfg.filters.max_ngram_repeats = 2
    assert check_quality(traj, cfg)["passed"] is True


def test_repeated_identical_tool_calls_count_as_repetition(cfg):
    same = search(think="Search again.", query="epsom derby winner nineteen sixty four santa claus horse")
    traj = make([same] * 5 + [answer()])
    funnel([traj], cfg)
    assert traj.filters["dropped_by"] == "quality" and traj.filters["quality"]["kind"] == "ngram-repeat"


# ------------------------------------------------------------------ optional LLM review
class CannedReviewer:
    """Unit-test stand-in for a paid judge API."""

    def __init__(self, text):
        self.text, self.prompts = text, []

    async def chat(self, messages, **sampling):
        self.prompts.append(messages[-1]["content"])
        await asyncio.sleep(0)
        return SimpleNamespace(text=self.text)


def test_llm_quality_review(cfg):
    cfg.filters.llm_quality_check = True
    approve = CannedReviewer("non_redundant: yes\ngoal_aligned: yes\nlogical: yes\nreasoning: fine\nkeep: yes")
    traj = make([search(), answer()])
    assert len(funnel([traj], cfg, client=approve)[0]) == 1
    assert "Which race did Santa Claus win" in approve.prompts[0] and "Epsom Downs" in approve.prompts[0]
    assert traj.filters["quality"]["llm"]["keep"] is True

    reject = CannedReviewer("non_redundant: no\ngoal_aligned: yes\nlogical: yes\nreasoning: loops\n**keep:** No")
    kept, counts = funnel([traj], cfg, client=reject)
    assert kept == [] and traj.filters["quality"]["kind"] == "llm-quality"
    assert "non_redundant" in traj.filters["quality"]["reason"]
    assert counts["dropped"]["quality"] == {"llm-quality": 1}

    mute = CannedReviewer("looks fine to me")
    assert funnel([traj], cfg, client=mute)[0] == []
    assert "no verdict" in traj.filters["quality"]["reason"]

    # only trajectories that passed the rule-based checks reach the (paid) reviewer
    approve.prompts.clear()
    funnel([make([search(), answer("Grand National")])], cfg, client=approve)
    assert approve.prompts == []

    with pytest.raises(ValueError, match="llm_quality_check"):
        funnel([traj], cfg)


# ------------------------------------------------------------------ funnel bookkeeping
def test_funnel_counts_and_verdicts_are_json_ready(cfg):
    trajs = [make([search(), answer()]),
             make([search(), answer()], sample=1),
             make([search().replace('"search"', '"x"'), answer()]),
             make([search(), answer("Grand National")]),
             make([answer()])]
    kept, counts = funnel(trajs, cfg)
    assert counts == {"input": 5, "validity": 4, "correctness": 3, "quality": 2, "kept": 2,
                      "dropped": {"validity": {"format": 1}, "correctness": {"wrong": 1},
                                  "quality": {"unsupported-answer": 1}}}
    assert kept == trajs[:2] and funnel_counts(trajs) == counts
    for traj in trajs:
        record = json.loads(json.dumps(traj.to_dict()))
        assert set(record["filters"]) == {"validity", "correctness", "quality", "kept", "dropped_by"}
        assert all(set(record["filters"][s]) >= {"passed", "reason"} for s in ("validity", "correctness", "quality"))
    assert funnel([], cfg) == ([], {"input": 0, "validity": 0, "correctness": 0, "quality": 0, "kept": 0,
                                    "dropped": {"validity": {}, "correctness": {}, "quality": {}}})


def test_run_funnel_works_inside_a_running_event_loop(cfg):
    async def notebook_cell():  # Jupyter runs cells inside a loop
        return run_funnel([make([search(), answer()])], cfg, progress=False)

    kept, counts = asyncio.run(notebook_cell())
    assert counts["kept"] == 1


# ------------------------------------------------------------------ real data
@pytest.mark.skipif(not SAMPLES.is_file(), reason="WebDancer samples not present")
def test_webdancer_released_samples_through_the_funnel(cfg):
    trajs = load_webdancer(SAMPLES)
    kept, counts = funnel(trajs, cfg)
    print("WebDancer samples, released verdicts:", counts)
    assert counts["input"] == 100 and counts["validity"] == 100  # every released trajectory is in format
    assert counts["correctness"] == 100  # their released verdicts are kept (no rejudge)
    assert 90 <= counts["kept"] <= counts["quality"] <= 100  # measured: 97 (3 answers not in any observation)
    assert all(t.filters["quality"]["max_ngram_repeats"] <= 4 for t in trajs)

    cfg.judge.rules_gold_in_answer = True
    kept, counts = funnel(trajs, cfg, rejudge=True)
    print("WebDancer samples, rejudged by rules + gold-in-answer:", counts)
    assert counts["validity"] == 100 and 50 <= counts["correctness"] < 100  # measured: 67

"""wdlib.judge: GAIA leaderboard rules, SQuAD EM/F1, verdict parsing, the LLM judge (with a canned-reply client
standing in for a paid judge API) and concurrent judging."""

import asyncio
import time
from types import SimpleNamespace

import pytest

from wdlib.config import JudgeParams
from wdlib.judge import (
    em,
    f1,
    gaia_match,
    judge_answer,
    judge_many,
    parse_verdict,
    parse_yes_no,
    rules_correct,
)


# ------------------------------------------------------------------ GAIA scorer rules
@pytest.mark.parametrize("prediction, gold, expected", [
    # numbers: `$ % ,` stripped from the prediction, then float equality
    ("1,000", "1000", True),
    ("$1,000.00", "1000", True),
    ("1000.0", "1000", True),
    ("17%", "17", True),
    (" 42 ", "42", True),
    ("1001", "1000", False),
    ("one thousand", "1000", False),
    ("about 1000", "1000", False),
    ("3.14", "3.1400", True),
    # a gold with a thousands separator is a LIST under the official rules: "1" and "000"
    ("1000", "1,000", False),
    ("1,000", "1,000", True),
    # strings: all whitespace removed, lowercased, punctuation removed
    ("sea gull", "seagull", True),
    ("Sea-Gull", "seagull", True),
    ("Hello, World!", "hello world", True),  # only the GOLD decides the rule: string rule, punctuation dropped
    ("hello world!", "Hello World", True),
    ("Epsom Derby", "Derby", False),
    ("  The  Archers ", "the archers", True),
    # lists: split on , or ;, same length, in order, numbers vs strings per element
    ("a, b, c", "a, b, c", True),
    ("a; b; c", "a, b, c", True),
    ("b, a, c", "a, b, c", False),
    ("a, b", "a, b, c", False),
    ("a, b, c, d", "a, b, c", False),
    ("1, 2.0, 3", "1, 2, 3", True),
    ("$1, 2%, x", "1, 2, X", True),
    ("New York, Los Angeles", "new york,los angeles", True),
    ("St. Louis, Paris", "St Louis, Paris", False),  # punctuation is kept inside list elements
    (None, "seagull", False),
])
def test_gaia_match_leaderboard_rules(prediction, gold, expected):
    assert gaia_match(prediction, gold) is expected


def test_gaia_match_string_rule_drops_punctuation_only_outside_lists():
    # "Hello, World!" as a prediction against a gold without separators follows the string rule
    assert gaia_match("Hello World!", "hello world") is True
    assert gaia_match("hello-world", "helloworld") is True
    # and inside a list the same punctuation counts
    assert gaia_match("hello-world, x", "helloworld, x") is False


# ------------------------------------------------------------------ EM / F1
def test_em_squad_normalisation():
    assert em("The Cat!", "cat") == 1.0
    assert em("an apple", "Apple.") == 1.0
    assert em("cats", "cat") == 0.0
    assert em(None, "cat") == 0.0


def test_f1_token_overlap():
    assert f1("the cat sat", "cat sat on mat") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert f1("Epsom Derby", "Derby") == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert f1("dog", "cat") == 0.0
    assert f1("", "") == 1.0
    assert f1("the", "cat") == 0.0  # only an article: empty after normalisation


def test_rules_correct_combines_gaia_and_f1():
    assert rules_correct("seagull", "sea gull")
    assert rules_correct("Thomas Fairfax", "Sir Thomas Fairfax", f1_threshold=0.6)  # F1 0.8
    assert not rules_correct("Thomas Fairfax", "Sir Thomas Fairfax", f1_threshold=0.9)
    assert not rules_correct("", "x") and not rules_correct(None, "x")
    verbose = "The race is the Epsom Derby, won by the horse Santa Claus in 1964."
    assert not rules_correct(verbose, "Epsom Derby")
    assert rules_correct(verbose, "Epsom Derby", gold_in_answer=True)
    assert not rules_correct(verbose, "Grand National", gold_in_answer=True)


# ------------------------------------------------------------------ verdict parsing
@pytest.mark.parametrize("reply, expected", [
    ("extracted_final_answer: Paris\nreasoning: same city\nconfidence: 95\ncorrect: yes", True),
    ("correct: no", False),
    ("CORRECT: YES", True),
    ("**correct:** Yes", True),
    ("**Correct**: **No**", False),
    ("- correct: yes", True),
    ("> correct: `no`", False),
    ("correct:yes", True),
    ("correct: Yes.", True),
    # words correct / incorrect inside the reasoning are not verdicts
    ("reasoning: the response is correct: it names Paris.\nThe answer is incorrect: no wait", None),
    ("reasoning: the extracted answer is incorrect.\ncorrect: no", False),
    ("reasoning: this is not incorrect\ncorrect: yes", True),
    ("incorrect: yes", None),
    # the LAST verdict line wins
    ("correct: yes\nreasoning: on reflection the dates differ\ncorrect: no", False),
    ("correct: no\n...\n**correct:** yes\n", True),
    # an echoed template is not a verdict
    ("correct: yes|no", None),
    ("correct: yes or no", None),
    ("correct: yes|no\nreasoning: matches\ncorrect: yes", True),
    ("correct: yesterday", None),
    ("", None),
    (None, None),
    ("I think it's right.", None),
])
def test_parse_verdict_tricky_replies(reply, expected):
    assert parse_verdict(reply) is expected


def test_parse_yes_no_returns_the_captured_word_not_the_line():
    verdict = parse_verdict("correct: no")
    assert verdict is False and not isinstance(verdict, str)
    assert parse_yes_no("non_redundant: yes\nkeep: no", "keep") is False
    assert parse_yes_no("non_redundant: yes\nkeep: no", "non_redundant") is True


# ------------------------------------------------------------------ judge_answer / judge_many
class CannedJudge:
    """Unit-test stand-in for a paid judge API: answers from a function of the prompt, records what it saw."""

    def __init__(self, respond, delay=0.0):
        self.respond, self.delay = respond, delay
        self.calls, self.in_flight, self.max_in_flight = [], 0, 0

    async def chat(self, messages, **sampling):
        self.calls.append((messages, sampling))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return SimpleNamespace(text=self.respond(messages[-1]["content"]))
        finally:
            self.in_flight -= 1


def test_judge_answer_rules_mode_needs_no_client():
    cfg = JudgeParams(mode="rules")
    out = asyncio.run(judge_answer("q", "seagull", "sea gull", cfg))
    assert out == {"correct": True, "method": "rules", "raw": None}
    out = asyncio.run(judge_answer("q", "seagull", "pigeon", cfg))
    assert out["correct"] is False


def test_judge_answer_llm_mode_uses_prompt_and_parses_verdict():
    judge = CannedJudge(lambda p: "extracted_final_answer: Epsom Derby\nreasoning: same race\n"
                                  "confidence: 90\n**correct:** yes")
    cfg = JudgeParams(mode="llm", temperature=0.0, max_new_tokens=256)
    out = asyncio.run(judge_answer("Which race?", "English horse race Derby", "The Epsom Derby", cfg, judge))
    assert out["correct"] is True and out["method"] == "llm" and "same race" in out["raw"]
    (messages, sampling), = judge.calls
    prompt = messages[-1]["content"]
    assert "Which race?" in prompt and "English horse race Derby" in prompt and "The Epsom Derby" in prompt
    assert "correct: yes" in prompt and sampling == {"temperature": 0.0, "max_new_tokens": 256}


def test_judge_answer_llm_without_verdict_falls_back_to_rules():
    judge = CannedJudge(lambda p: "I cannot decide.")
    cfg = JudgeParams(mode="llm")
    out = asyncio.run(judge_answer("q", "seagull", "Sea Gull", cfg, judge))
    assert out["correct"] is True and out["method"] == "llm-unparsed+rules" and out["raw"] == "I cannot decide."


def test_judge_answer_llm_mode_without_client_uses_rules():
    out = asyncio.run(judge_answer("q", "1000", "$1,000", JudgeParams(mode="llm")))
    assert out["correct"] is True and out["method"].startswith("rules")


def test_judge_answer_no_prediction_is_wrong_without_a_call_and_no_gold_is_an_error():
    judge = CannedJudge(lambda p: "correct: yes")
    out = asyncio.run(judge_answer("q", "x", None, JudgeParams(mode="llm"), judge))
    assert out["correct"] is False and out["method"] == "no-answer" and judge.calls == []
    with pytest.raises(ValueError, match="gold"):
        asyncio.run(judge_answer("q", None, "x", JudgeParams()))


def test_judge_many_is_concurrent_bounded_and_ordered():
    # verdict depends on the prediction, so the order of results is checkable
    judge = CannedJudge(lambda p: "correct: yes" if "[response]: right" in p else "correct: no", delay=0.05)
    items = [{"question": f"q{i}", "gold": "g", "prediction": "right" if i % 3 == 0 else "wrong"}
             for i in range(20)]
    cfg = JudgeParams(mode="llm")
    start = time.perf_counter()
    results = asyncio.run(judge_many(items, cfg, judge, concurrency=5, progress=False))
    elapsed = time.perf_counter() - start
    assert [r["correct"] for r in results] == [i % 3 == 0 for i in range(20)]
    assert judge.max_in_flight == 5
    assert elapsed < 20 * 0.05 / 2  # serial would take 1.0 s; 4 waves of 5 take ~0.2 s


def test_judge_many_isolates_failures():
    def respond(prompt):
        if "[question]: boom" in prompt:
            raise ConnectionError("judge endpoint down")
        return "correct: yes"

    items = [{"question": "ok", "gold": "a", "prediction": "a"},
             {"question": "boom", "gold": "a", "prediction": "a"},
             SimpleNamespace(question="no gold", gold=None, prediction="a")]
    results = asyncio.run(judge_many(items, JudgeParams(mode="llm"), CannedJudge(respond), progress=False))
    assert results[0]["correct"] is True
    assert results[1]["correct"] is None and results[1]["method"] == "error" and "down" in results[1]["raw"]
    assert results[2]["correct"] is None and "gold" in results[2]["raw"]

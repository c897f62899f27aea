"""Is an answer right? The GAIA leaderboard scorer, SQuAD EM/F1, and an LLM judge.

- `gaia_match(prediction, gold)` follows the rules of the GAIA leaderboard's `question_scorer` (huggingface.co/spaces/
  gaia-benchmark/leaderboard, scorer.py), quirks included, so our GAIA numbers compare with published ones:
    * gold parses as a float → the prediction, with `$ % ,` removed, must parse to the same float;
    * gold contains `,` or `;` → both are split on `,`/`;`, lengths must match, elements are compared in order:
      numeric gold elements as numbers (as above), others as strings without whitespace, lowercased
      (punctuation KEPT inside list elements);
    * otherwise → both strings with all whitespace removed, lowercased, ASCII punctuation removed.
  Quirk kept on purpose: a gold written with a thousands separator (`1,000`) is treated as a list, so the
  prediction `1000` does not match it (the reverse, prediction `1,000` vs gold `1000`, does).
- `em`, `f1`: SQuAD v1.1 normalisation (`wdlib.text.normalize_answer`: lowercase, drop punctuation and the articles
  a/an/the, squash spaces).
- Three judge modes (`judge.mode`, per benchmark `eval.judge`):
    * `rules` (the CPU default): `gaia_match(...) or f1(...) >= judge.f1_threshold` (or, opt-in
      `judge.rules_gold_in_answer`, the whole gold phrase inside a verbose prediction);
    * `llm`: a strict HLE/BrowseComp-style grading prompt (`JUDGE_PROMPT`), the reply ends in `correct: yes|no`;
    * `equivalence`: how the paper's evaluation judged (the authors reuse WebThinker's equivalence judge): a rule match
      (`rule_match`: SQuAD-normalised exact match or the GAIA scorer) counts as correct at once, otherwise an LLM is
      asked, in our own words (`EQUIVALENCE_PROMPT`), whether the two answers are equivalent: `Correct` / `Incorrect`.
  Every verdict is read by `parse_verdict` (any of the shapes judges reply in, Chinese included). A reply without a
  verdict is recorded as unparsed (`correct: None`, `unparsed: True`), counted in the summary, never replaced by rules.
  Each verdict records its mode, judge model and prompt version (`PROMPT_VERSIONS`).

The judge client is any object with `async chat(messages, **sampling) -> reply` whose reply has `.text`
(every `wdlib.llm` client).
"""

from __future__ import annotations

import asyncio
import logging
import re
import string
from collections import Counter
from typing import Any, Iterable

from tqdm.auto import tqdm

from wdlib.config import Config, JudgeParams
from wdlib.text import normalize_answer
from wdlib.verdicts import parse_verdict, parse_yes_no  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ GAIA leaderboard rules
_LIST_SEPARATORS = re.compile(r"[,;]")


def _is_float(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _as_number(text: str) -> float:
    """The scorer's number normalisation: drop `$`, `%` and `,`, then float(); unparsable → inf (never equal)."""
    for char in "$%,":
        text = text.replace(char, "")
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _squash(text: str, drop_punctuation: bool = True) -> str:
    """All whitespace removed ("sea gull" == "seagull"), lowercased, ASCII punctuation optionally removed."""
    text = re.sub(r"\s", "", text).lower()
    return text.translate(str.maketrans("", "", string.punctuation)) if drop_punctuation else text


def gaia_match(prediction: str | None, gold: str) -> bool:
    """True when `prediction` matches `gold` under the GAIA leaderboard scorer's rules (see module docstring)."""
    prediction = "None" if prediction is None else str(prediction)  # as the scorer does for a missing answer
    gold = str(gold)
    if _is_float(gold):
        return _as_number(prediction) == float(gold)
    if _LIST_SEPARATORS.search(gold):
        gold_items = _LIST_SEPARATORS.split(gold)
        pred_items = _LIST_SEPARATORS.split(prediction)
        if len(gold_items) != len(pred_items):
            return False
        for pred_item, gold_item in zip(pred_items, gold_items):
            if _is_float(gold_item):
                if _as_number(pred_item) != float(gold_item):
                    return False
            elif _squash(pred_item, drop_punctuation=False) != _squash(gold_item, drop_punctuation=False):
                return False
        return True
    return _squash(prediction) == _squash(gold)


# ------------------------------------------------------------------ SQuAD EM / F1
def em(prediction: str | None, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str | None, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_in_prediction(prediction: str | None, gold: str) -> bool:
    """The whole SQuAD-normalised gold occurs as a word phrase inside the normalised prediction."""
    gold_norm = normalize_answer(gold)
    return bool(gold_norm) and f" {gold_norm} " in f" {normalize_answer(prediction)} "


def rules_correct(prediction: str | None, gold: str, f1_threshold: float = 0.6,
                  gold_in_answer: bool = False) -> bool:
    """The offline judge: GAIA match, or enough SQuAD-F1 token overlap for longer free-form answers; with
    `gold_in_answer`, also a verbose prediction that contains the whole gold ("The race is the Epsom Derby, won…")."""
    if prediction is None or not str(prediction).strip():
        return False
    return (gaia_match(prediction, gold) or f1(prediction, gold) >= f1_threshold
            or (gold_in_answer and gold_in_prediction(prediction, gold)))


# ------------------------------------------------------------------ LLM judge
JUDGE_PROMPT = """\
You are grading an answer to a question against the reference answer. Decide whether the [response] answers the \
[question] correctly, judged ONLY by the precise, unambiguous [correct_answer] below.

[question]: {question}

[response]: {response}

[correct_answer]: {correct_answer}

Reply with exactly these four fields, each on its own line, in this order:

extracted_final_answer: the final exact answer taken from the [response]. Write None if the response gives no \
final answer.
reasoning: explain briefly whether extracted_final_answer and [correct_answer] mean the same thing. Look only for \
meaningful differences between the two; do not solve the question again, do not bring in background knowledge, do \
not argue for an answer other than [correct_answer]. Equivalent forms (abbreviations, spelling variants, \
units written differently, small rounding differences for numbers) count as the same answer.
confidence: how sure you are of your judgement, from 0 to 100.
correct: yes if extracted_final_answer matches [correct_answer] (or is within a small margin of error for a \
numerical answer); no if it is missing, different, only partly right, ambiguous, or contains extra wrong claims.

The last line of your reply must be `correct: yes` or `correct: no`."""

EQUIVALENCE_PROMPT = """\
Two answers to the same question are given below: a reference answer, known to be right, and a predicted answer. \
Decide whether the predicted answer means the same as the reference answer.

Question: {question}

Reference answer: {gold}

Predicted answer: {prediction}

Count them as equivalent when they name the same thing, person, place, date or quantity, even if they are worded \
differently, written in another language, abbreviated, spelled differently, or formatted differently (units, number \
formats, capitalisation), and also when the predicted answer adds detail that does not contradict the reference. \
Count them as not equivalent when the predicted answer names something else, gives only part of what the reference \
requires, hedges between several answers, or gives no answer. Judge the meaning only; do not solve the question again.

Reply with one word: Correct if the answers are equivalent, Incorrect if they are not."""

JUDGE_MODES = ("rules", "llm", "equivalence")
# Bump a version whenever its prompt's text changes: verdicts made with different prompts are not comparable.
PROMPT_VERSIONS = {"llm": "graded-v1", "equivalence": "equivalence-v1"}


def judge_messages(question: str, gold: str, prediction: str, mode: str = "llm") -> list[dict[str, str]]:
    """The judge prompt of `mode` (llm: graded; equivalence) as chat messages."""
    if mode == "equivalence":
        text = EQUIVALENCE_PROMPT.format(question=question, gold=gold, prediction=prediction)
    else:
        text = JUDGE_PROMPT.format(question=question, response=prediction, correct_answer=gold)
    return [{"role": "user", "content": text}]


def rule_match(prediction: str | None, gold: str) -> bool:
    """The equivalence judge's rule: the same answer after SQuAD normalisation, or a match by the GAIA scorer."""
    if prediction is None or not str(prediction).strip():
        return False
    return bool(em(prediction, gold)) or gaia_match(prediction, gold)


def _judge_section(cfg: Config | JudgeParams) -> JudgeParams:
    """Accept the whole Config or just its JudgeConfig."""
    return getattr(cfg, "judge", cfg)


async def judge_answer(question: str, gold: str | None, prediction: str | None, cfg: Config | JudgeParams,
                       client: Any = None, *, mode: str | None = None) -> dict[str, Any]:
    """Judge one answer under `mode` (default `judge.mode`). Returns {"correct": bool | None, "method", "mode",
    "raw": the judge's reply or None} plus, when an LLM was asked, "model" and "prompt_version", and "unparsed": True
    when its reply held no verdict (correct is then None: counted, never guessed).

    Methods: no-answer (a missing prediction is wrong without asking anyone), rules, rule-match (equivalence mode's
    rule), llm, llm-unparsed, and `rules (no judge client)` when an LLM mode has no client (params
    `models.judge: null`). A missing gold is an error.
    """
    jcfg = _judge_section(cfg)
    mode = mode or jcfg.mode
    if mode not in JUDGE_MODES:
        raise ValueError(f"unknown judge mode {mode!r}; known: {', '.join(JUDGE_MODES)}")
    if gold is None:
        raise ValueError(f"cannot judge without a gold answer (question: {question[:80]!r})")
    if prediction is None or not str(prediction).strip():
        return {"correct": False, "method": "no-answer", "mode": mode, "raw": None}
    if mode == "equivalence" and rule_match(prediction, gold):
        return {"correct": True, "method": "rule-match", "mode": mode, "raw": None}
    by_rules = rules_correct(prediction, gold, jcfg.f1_threshold, jcfg.rules_gold_in_answer)
    if mode == "rules":
        return {"correct": by_rules, "method": "rules", "mode": mode, "raw": None}
    if client is None:
        log.warning("judge mode %r needs a judge model but none was given; judging by rules", mode)
        return {"correct": by_rules, "method": "rules (no judge client)", "mode": mode, "raw": None}
    reply = await client.chat(judge_messages(question, gold, str(prediction), mode),
                              temperature=jcfg.temperature, max_new_tokens=jcfg.max_new_tokens)
    verdict = parse_verdict(reply.text)
    record = {"correct": verdict, "method": "llm" if verdict is not None else "llm-unparsed", "mode": mode,
              "raw": reply.text, "model": getattr(client, "model_name", type(client).__name__),
              "prompt_version": PROMPT_VERSIONS[mode]}
    if verdict is None:
        record["unparsed"] = True
    return record


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


async def judge_many(items: Iterable[Any], cfg: Config | JudgeParams, client: Any = None, concurrency: int = 8,
                     progress: bool = True, mode: str | None = None) -> list[dict[str, Any]]:
    """Judge many answers concurrently (at most `concurrency` judge calls in flight), results in input order.

    Items are dicts or objects (e.g. Trajectory) with `question`, `gold` and `prediction`. An item whose judging
    fails (judge endpoint down after the client's retries, missing gold) gets
    {"correct": None, "method": "error", "raw": message}; nothing else is lost.
    """
    items = list(items)
    limit = asyncio.Semaphore(max(1, concurrency))
    bar = tqdm(total=len(items), desc="judge", disable=not progress or len(items) < 2)

    async def one(item: Any) -> dict[str, Any]:
        async with limit:
            try:
                return await judge_answer(_field(item, "question") or "", _field(item, "gold"),
                                          _field(item, "prediction"), cfg, client, mode=mode)
            except Exception as exc:  # one bad item must not sink the batch
                return {"correct": None, "method": "error", "raw": f"{type(exc).__name__}: {exc}"}
            finally:
                bar.update(1)

    try:
        return list(await asyncio.gather(*(one(item) for item in items)))
    finally:
        bar.close()

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
- LLM judge: an HLE/BrowseComp-style grading prompt; the reply ends in a line `correct: yes|no`, read by
  `parse_verdict`. `judge.mode: rules` (the CPU default) is `gaia_match(...) or f1(...) >= judge.f1_threshold`
  (or, opt-in `judge.rules_gold_in_answer`, the whole gold phrase inside a verbose prediction).

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

# A verdict line: optional markdown decoration (bullets, **bold**, _italics_, > quotes, # headings), the field name,
# a colon, then yes/no possibly wrapped in ** or quotes. Anchored at the start of the line, so "incorrect:" or
# "is correct: ..." inside the reasoning never count. "yes|no" / "yes or no" (an echoed template) does not count.
_YES_NO_LINE = r"^[\s>#*_\-•]*{field}[\s*_]*:[\s*_`'\"]*(yes|no)(?![\w|/])(?!\s*(?:[|/]|or\b))"


def parse_yes_no(text: str | None, field: str) -> bool | None:
    """The LAST `field: yes|no` line of a reply: True/False, or None when there is none.

    Returns the captured yes/no only, never the whole matched line.
    """
    if not text:
        return None
    matches = re.findall(_YES_NO_LINE.format(field=re.escape(field)), text, flags=re.IGNORECASE | re.MULTILINE)
    if not matches:
        return None
    return matches[-1].lower() == "yes"


def parse_verdict(text: str | None) -> bool | None:
    """The judge's verdict: True for `correct: yes`, False for `correct: no`, None when the reply has no verdict.

    The LAST verdict line wins (a judge may restate its template or change its mind before the end).
    """
    return parse_yes_no(text, "correct")


def judge_messages(question: str, gold: str, prediction: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": JUDGE_PROMPT.format(question=question, response=prediction,
                                                            correct_answer=gold)}]


def _judge_section(cfg: Config | JudgeParams) -> JudgeParams:
    """Accept the whole Config or just its JudgeConfig."""
    return getattr(cfg, "judge", cfg)


async def judge_answer(question: str, gold: str | None, prediction: str | None, cfg: Config | JudgeParams,
                       client: Any = None) -> dict[str, Any]:
    """Judge one answer. Returns {"correct": bool, "method": "rules"|"llm"|..., "raw": judge reply or None}.

    mode `llm` needs a client; without one (params `models.judge: null`) it falls back to the rules, saying so in
    `method`. A reply with no verdict line also falls back to the rules (method `llm-unparsed+rules`), keeping the
    raw reply for inspection. A missing prediction is wrong without asking anyone; a missing gold is an error.
    """
    jcfg = _judge_section(cfg)
    if gold is None:
        raise ValueError(f"cannot judge without a gold answer (question: {question[:80]!r})")
    if prediction is None or not str(prediction).strip():
        return {"correct": False, "method": "no-answer", "raw": None}
    by_rules = rules_correct(prediction, gold, jcfg.f1_threshold, jcfg.rules_gold_in_answer)
    if jcfg.mode == "rules":
        return {"correct": by_rules, "method": "rules", "raw": None}
    if client is None:
        log.warning("judge.mode is 'llm' but no judge client was given; judging by rules")
        return {"correct": by_rules, "method": "rules (no judge client)", "raw": None}
    reply = await client.chat(judge_messages(question, gold, str(prediction)),
                              temperature=jcfg.temperature, max_new_tokens=jcfg.max_new_tokens)
    verdict = parse_verdict(reply.text)
    if verdict is None:
        return {"correct": by_rules, "method": "llm-unparsed+rules", "raw": reply.text}
    return {"correct": verdict, "method": "llm", "raw": reply.text}


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


async def judge_many(items: Iterable[Any], cfg: Config | JudgeParams, client: Any = None, concurrency: int = 8,
                     progress: bool = True) -> list[dict[str, Any]]:
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
                                          _field(item, "prediction"), cfg, client)
            except Exception as exc:  # one bad item must not sink the batch
                return {"correct": None, "method": "error", "raw": f"{type(exc).__name__}: {exc}"}
            finally:
                bar.update(1)

    try:
        return list(await asyncio.gather(*(one(item) for item in items)))
    finally:
        bar.close()

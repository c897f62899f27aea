"""What both QA generators (CrawlQA, E2HQA) check a pair against, and the train / held-out split.

Text is compared after `normalize` (the one answer normaliser, `wdlib.text.normalize_answer`, with punctuation as a
word break: an answer is looked for inside a page or a question, not scored); content words leave out
`wdlib.text.STOPWORDS`.
"""

from __future__ import annotations

import random
import re
import string
from typing import Iterable

from wdlib.text import STOPWORDS, normalize_answer
from wdlib.trajectory import QAPair

_WORD_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}

# A quoted name in a question (“os.getcwd”, "King Solomon's Mines"): what to search for first.
QUOTED = re.compile(r"[\"“]([^\"”]{2,80})[\"”]")


# What separates words when an answer is looked for in a text: ASCII punctuation, typographic quotes and dashes.
# (Other symbols stay part of their word: "Introduction¶" is not the word "introduction". `\W`, as the filters use,
# would make it one; kept as it was so that synthesis keeps producing the same pairs.)
WORD_BREAKS = "[" + re.escape(string.punctuation + "“”‘’—–") + "]"


def normalize(text: str) -> str:
    """Lowercase, punctuation and typographic quotes/dashes as spaces, articles dropped, spaces squeezed."""
    return normalize_answer(text, word_breaks=WORD_BREAKS)


def content_words(text: str) -> list[str]:
    return [w for w in normalize(text).split() if w not in STOPWORDS]


def as_number(text: str) -> int | None:
    t = normalize(text)
    if re.fullmatch(r"\d+", t.replace(" ", "")):
        return int(t.replace(" ", ""))
    return _WORD_NUMBERS.get(t)


def answer_in_text(answer: str, text: str) -> bool:
    """The answer occurs in the text: as a normalised phrase, or every content word of it does."""
    a, t = normalize(answer), normalize(text)
    if not a:
        return False
    if f" {a} " in f" {t} ":
        return True
    words = content_words(answer)
    return bool(words) and set(words) <= set(t.split())


def leaks(answer: str, question: str) -> bool:
    """The question gives the answer away (contains it as a phrase, or all of its content words)."""
    return answer_in_text(answer, question)



def dedupe(qa: Iterable[QAPair]) -> list[QAPair]:
    """Drop repeated questions (after normalisation); the first occurrence wins."""
    seen, out = set(), []
    for q in qa:
        key = normalize(q.question)
        if key not in seen:
            seen.add(key)
            out.append(q)
    return out



def split_eval(qa: list[QAPair], fraction: float, seed: int = 0) -> tuple[list[QAPair], list[QAPair]]:
    """Hold out `fraction` of the QA (at least one pair when fraction > 0 and there are two or more), stratified
    by source so both CrawlQA and E2HQA appear in the evaluation set."""
    if fraction <= 0 or len(qa) < 2:
        return list(qa), []
    rng = random.Random(seed)
    groups: dict[str, list[QAPair]] = {}
    for q in sorted(qa, key=lambda q: q.id):
        groups.setdefault(q.source, []).append(q)
    held: set[str] = set()
    for items in groups.values():
        rng.shuffle(items)
        held.update(q.id for q in items[:round(fraction * len(items))])
    if not held:
        held.add(rng.choice(sorted(q.id for q in qa)))
    return [q for q in qa if q.id not in held], [q for q in qa if q.id in held]

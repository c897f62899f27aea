"""Text utilities shared across the library, each written once: answer normalisation, stopwords, JSON in a model's
reply, passages of a page, the BM25 tokenizer. Imports nothing from wdlib.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any

# ------------------------------------------------------------------ answers
ARTICLES = frozenset({"a", "an", "the"})
# Function words: left out when measuring how much of an answer (or a question) another text contains.
STOPWORDS = ARTICLES | frozenset(
    "of in on at to for by with from and or but is are was were be been it its as that this which who whom whose "
    "what when where how than then there their his her he she they them we you i not no".split())

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLE = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str | None, *, word_breaks: str | None = None) -> str:
    """SQuAD v1.1 normalisation: lowercase, drop punctuation, drop the articles a/an/the, squash whitespace.

    `word_breaks` (a regex character class): the characters that separate words instead of vanishing, so "os.path"
    is the two words of "os path". For finding an answer inside a page, a question or an observation
    (`wdlib.synthesis.qa`, `wdlib.synthesis.filters`); scoring an answer against its gold (EM/F1, the judge) uses the
    plain SQuAD rule.
    """
    text = str(text or "").lower()
    if word_breaks is None:
        return " ".join(_ARTICLE.sub(" ", text.translate(_DROP_PUNCTUATION)).split())
    return " ".join(w for w in re.sub(word_breaks, " ", text).split() if w not in ARTICLES)


def clean_text(text: str) -> str:
    """One line of visible text: whitespace squashed, pilcrows (headings' permalink marks) dropped."""
    return re.sub(r"\s+", " ", text.replace("¶", "")).strip()


# ------------------------------------------------------------------ JSON in a model's reply
_DECODER = json.JSONDecoder()


def decode_json_at(text: str, start: int) -> tuple[Any, int]:
    """(value, end) of the JSON object/array starting at `text[start]`; (None, start) when there is none. The usual
    slips of small models (trailing commas, single-quoted keys and strings) are repaired on the balanced span."""
    try:
        return _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):  # not JSON; or nested too deep, an integer over 4,300 digits
        pass
    depth, end, quote = 0, None, None
    for k in range(start, len(text)):
        ch = text[k]
        if quote:
            if ch == quote and text[k - 1] != "\\":
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                end = k + 1
                break
    if end is None:
        return None, start
    span = re.sub(r",\s*([}\]])", r"\1", text[start:end])
    span = re.sub(r"'([^'\"]*)'(\s*[:,}\]])", r'"\1"\2', span)
    try:
        return json.loads(span), end
    except (ValueError, RecursionError):
        return None, start


def parse_json_objects(text: str) -> list[Any]:
    """Every JSON object/array found in model output: code fences, prose around it, several objects, trailing
    commas and single-quoted keys are tolerated. A list found at top level is flattened."""
    if not isinstance(text, str):
        return []
    text = re.sub(r"```(?:json)?", "", text)
    found, i = [], 0
    while i < len(text):
        start = min((j for j in (text.find("{", i), text.find("[", i)) if j >= 0), default=-1)
        if start < 0:
            break
        obj, end = decode_json_at(text, start)
        if obj is None:
            i = start + 1
            continue
        found.extend(obj if isinstance(obj, list) else [obj])
        i = end
    return [o for o in found if isinstance(o, dict)]


# ------------------------------------------------------------------ passages
def chunk_spans(text: str, max_words: int = 100) -> list[tuple[int, int]]:
    """(start, end) of consecutive passages of `text` of about `max_words` words: whole lines grouped, lines longer
    than that cut after a sentence end. Contiguous spans, so a passage is always `text[start:end]`."""
    cuts = [0]  # candidate boundaries: line starts, and sentence starts inside long lines
    pos = 0
    for line in text.split("\n"):
        end = pos + len(line)
        if line.count(" ") >= max_words:
            cuts.extend(m.end() + pos for m in re.finditer(r"[.!?;:]\s+", line))
        pos = end + 1
        cuts.append(min(pos, len(text)))
    spans, start, words = [], 0, 0
    for a, b in zip(cuts, cuts[1:]):
        n = text.count(" ", a, b) + 1
        if words and words + n > max_words:
            spans.append((start, a))
            start, words = a, 0
        words += n
    if start < len(text):
        spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def passages(text: str, max_words: int = 100) -> list[str]:
    return [text[a:b].strip() for a, b in chunk_spans(text, max_words)]


# ------------------------------------------------------------------ BM25
def bm25_tokenizer():
    """The bm25s tokenizer of the local search index and of visit's extractive evidence: English stopwords,
    Snowball stemming."""
    import bm25s
    import Stemmer

    return bm25s.tokenization.Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english").stemWord)


# ------------------------------------------------------------------ an entity described, not named
_CLAUSE = re.compile(r",\s|;\s|\s(?=(?:which|who|whose|that|and|where|when|while|but)\s)")


def describe(name: str, text: str, max_words: int = 25) -> str | None:
    """A description of `name` from a text about it, without naming it, taken from its defining sentence:
    "Alan Moore (born 1953) is an English author known for…" → "an English author known for…". Cut at a clause
    boundary to at most `max_words` words. None when the text has no such sentence or the description would
    still give the name away."""
    text = re.sub(r"\s*\([^)]*\)", "", clean_text(text))  # "(born 1953)", pronunciations
    m = re.search(rf"(?:^|(?<=[.!?\s]))(?:The\s+)?{re.escape(name)}\b[^.!?]{{0,60}}?\b(?:is|was|are|were)\s+"
                  rf"(?P<desc>(?:a|an|the|one)\b.+?)(?=[.!?](?:\s|$)|$)", text, flags=re.I)
    if not m:
        return None
    desc = m.group("desc").strip()
    tokens = desc.split()
    if len(tokens) > max_words:  # the longest prefix that ends at a clause boundary and fits
        cuts = [c.start() for c in _CLAUSE.finditer(desc) if 4 <= len(desc[:c.start()].split()) <= max_words]
        if not cuts:
            return None
        desc = desc[:cuts[-1]]
    desc = re.sub(r"(?:[\s,;:]+(?:and|or|but|that|which|who|of|the|a|an|in|on|to|with|by|for))+$", "",
                  desc.strip()).rstrip(",;: ")
    proper = [w for w in re.findall(r"\w+", name) if w[:1].isupper() and len(w) > 3]
    if any(re.search(rf"\b{re.escape(w)}\b", desc) for w in proper):
        return None  # the description repeats the name ("Paris is the capital of the Paris region")
    return desc if len(desc.split()) >= 3 else None

"""The citation check: is each cited sentence of a report backed by the page it cites? Offline by default.

For each citation `[n]` of a sentence:
- no source has number n → not supported ("unknown reference");
- source n is a search result the agent never visited → not supported: only a visited page can back a sentence
  (`report.accept_snippets: true` lets the search snippet back it);
- lexical (`report.citation_check: lexical`): the sentence's content words (`wdlib.text.normalize_answer` with
  punctuation as a word break, `wdlib.text.STOPWORDS` left out) are looked up in each passage of
  `report.passage_words` words of the cited text (`wdlib.text.passages`); the best passage's share of them is the
  support score. Supported when the score is at least `report.support_threshold` and every number of the sentence
  is in that passage (a wrong year or count with the right words around it is the typical unsupported claim);
- llm (`report.citation_check: llm`, models.judge): the judge reads the sentence and the cited page's three best
  passages and ends its reply with `supported: yes|no`; a reply without a verdict, or a failed call, falls back to
  the lexical verdict (the method says so).
A sentence is supported when at least one of its citations supports it.

Per report: citation precision = supported / cited sentences (None when nothing is cited); the uncited sentences with
factual content (a number, a name: a capitalised word after the first, or code such as `os.path` / `join()`);
references never cited; citations of numbers no source has.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from wdlib.judge import parse_yes_no
from wdlib.report.draft import Draft, plain
from wdlib.report.sources import Source
from wdlib.text import STOPWORDS, normalize_answer, passages

SUPPORT_PROMPT = """\
Does the source passage support the sentence? It does when the passage states what the sentence claims (a \
paraphrase is fine); it does not when the passage does not say it, says something different, or only shares some \
words with it.

[sentence]: {sentence}

[passage]:
{passage}

Give a one-line reason, then a last line `supported: yes` or `supported: no`."""

_NUMBER = re.compile(r"^\d+$")
_CODE = re.compile(r"\w[._]\w|\w\(\)|`")


def content_words(text: str) -> list[str]:
    """Words that carry content: normalised, punctuation as a word break ("os.path" → os, path; "72,067" → 72067),
    function words left out."""
    words = normalize_answer(re.sub(r"(?<=\d),(?=\d)", "", text or ""), word_breaks=r"\W").split()
    return [w for w in words if w not in STOPWORDS]


def has_facts(sentence: str) -> bool:
    """A sentence states something checkable: a number, a name (a capitalised word after the first) or code."""
    text = plain(sentence)
    words = re.findall(r"[^\W\d_][\w'-]*", text)
    return bool(re.search(r"\d", text) or _CODE.search(text)
                or any(w[0].isupper() and w != "I" for w in words[1:]))


class _Passages:
    """A source's passages with their content words, computed once per source."""

    def __init__(self, source: Source, passage_words: int):
        self.items = [(p, set(content_words(p))) for p in passages(source.text, passage_words)] or [("", set())]

    def ranked(self, words: list[str]) -> list[tuple[float, str, set[str]]]:
        want = set(words)
        scored = [(len(want & have) / max(len(want), 1), p, have) for p, have in self.items]
        return sorted(scored, key=lambda x: -x[0])


def lexical_support(sentence: str, source: Source, passage_words: int = 80,
                    threshold: float = 0.6) -> dict[str, Any]:
    """The lexical verdict of one citation (see the module docstring): supported, score, the best passage, why."""
    return _lexical(content_words(plain(sentence)), _Passages(source, passage_words), threshold)


def _lexical(words: list[str], pieces: _Passages, threshold: float) -> dict[str, Any]:
    if not words:
        return {"supported": False, "score": 0.0, "passage": "", "reason": "the sentence has no content words"}
    score, passage, have = pieces.ranked(words)[0]
    missing_numbers = sorted({w for w in words if _NUMBER.match(w)} - have)
    supported = score >= threshold and not missing_numbers
    if supported:
        reason = f"{score:.0%} of its content words are in one passage of the page"
    elif missing_numbers:
        reason = f"the number(s) {', '.join(missing_numbers)} are not in the best passage ({score:.0%} word overlap)"
    else:
        reason = f"only {score:.0%} of its content words are in any one passage (threshold {threshold:.0%})"
    return {"supported": supported, "score": round(score, 3), "passage": passage, "reason": reason}


async def _judged(sentence: str, words: list[str], pieces: _Passages, lexical: dict, judge: Any,
                  semaphore: asyncio.Semaphore) -> dict[str, Any]:
    best = "\n\n".join(p for _, p, _ in pieces.ranked(words)[:3] if p)
    prompt = SUPPORT_PROMPT.format(sentence=sentence, passage=best or "(empty)")
    try:
        async with semaphore:
            reply = await judge.chat([{"role": "user", "content": prompt}], temperature=0.0, max_new_tokens=256)
        verdict = parse_yes_no(getattr(reply, "text", reply), "supported")
    except Exception as exc:  # the judge is down: the offline verdict stands, and says why
        return {**lexical, "method": f"lexical (judge failed: {type(exc).__name__})"}
    if verdict is None:
        return {**lexical, "method": "lexical (judge gave no verdict)"}
    said = getattr(reply, "text", reply)[-300:]
    return {**lexical, "supported": verdict, "method": "llm", "reason": f"judge: {said}"}


async def check_draft(draft: Draft, sources: list[Source], *, threshold: float = 0.6, passage_words: int = 80,
                      accept_snippets: bool = False, judge: Any = None, concurrency: int = 8) -> dict[str, Any]:
    """Check every sentence of `draft` (its `check` is filled in) and return the report's figures."""
    by_n = {s.n: s for s in sources}
    pieces: dict[int, _Passages] = {}
    semaphore = asyncio.Semaphore(concurrency)
    method = "llm" if judge is not None else "lexical"

    async def cite(sentence: str, words: list[str], n: int) -> dict[str, Any]:
        source = by_n.get(n)
        if source is None:
            return {"n": n, "supported": False, "score": 0.0, "passage": "", "method": "none",
                    "reason": f"no source has number {n}"}
        if n not in pieces:
            pieces[n] = _Passages(source, passage_words)
        verdict = {**_lexical(words, pieces[n], threshold), "method": "lexical"}
        if not source.visited and not accept_snippets:
            return {"n": n, **verdict, "supported": False, "method": "none",
                    "reason": "the page was never visited (only its search result was seen)"}
        if judge is not None:
            verdict = await _judged(sentence, words, pieces[n], verdict, judge, semaphore)
        return {"n": n, **verdict}

    async def one(sentence) -> None:
        text = sentence.plain
        words = content_words(text)
        cited = await asyncio.gather(*(cite(text, words, n) for n in sentence.cites))
        supported = any(c["supported"] for c in cited) if cited else None
        sentence.check = {"factual": has_facts(sentence.text), "supported": supported, "citations": list(cited)}

    sentences = draft.sentences
    await asyncio.gather(*(one(s) for s in sentences))
    cited = [s for s in sentences if s.cites]
    supported = [s for s in cited if s.check["supported"]]
    citations = [c for s in cited for c in s.check["citations"]]
    used = {n for s in cited for n in s.cites}
    return {
        "method": method, "threshold": threshold, "passage_words": passage_words, "accept_snippets": accept_snippets,
        "sentences": len(sentences), "cited_sentences": len(cited), "supported_sentences": len(supported),
        "citation_precision": len(supported) / len(cited) if cited else None,
        "citations": len(citations), "supported_citations": sum(c["supported"] for c in citations),
        "unsupported": [s.plain for s in cited if not s.check["supported"]],
        "uncited_factual": [s.plain for s in sentences if not s.cites and s.check["factual"]],
        "uncited_references": [s.n for s in sources if s.n not in used],
        "unknown_references": sorted(used - set(by_n)),
    }

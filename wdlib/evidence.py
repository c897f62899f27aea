"""Visit's evidence: what a page says about the agent's goal. With a summarizer model, WebDancer's extractor prompt and
its JSON reply {rational, evidence, summary} (`parse_evidence_json`); without one, or when its reply is unusable,
extractively (`extractive_evidence`: BM25 over the page's passages).
"""

from __future__ import annotations

import functools
import json
import re
import threading
from typing import Any

from wdlib.text import bm25_tokenizer, decode_json_at, passages

# {rational, evidence, summary}.
EXTRACTOR_PROMPT = """Please process the following webpage content and user goal to extract relevant information:

## **Webpage Content**
{webpage_content}

## **User Goal**
{goal}

## **Task Guidelines**
1. **Content Scanning for Rational**: Locate the **specific sections/data** directly related to the user's goal within the webpage content
2. **Key Extraction for Evidence**: Identify and extract the **most relevant information** from the content, you never miss any important information, output the **full original context** of the content as far as possible, it can be more than three paragraphs.
3. **Summary Output for Summary**: Organize into a concise paragraph with logical flow, prioritizing clarity and judge the contribution of the information to the goal.

**Final Output Format using JSON format has "rational", "evidence", "summary" fields**
"""

NO_CONTENT_EVIDENCE = "The provided webpage content could not be accessed. Please check the URL or file format."
NO_CONTENT_SUMMARY = "The webpage content could not be processed, and therefore, no information is available."


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(_as_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else str(value).strip()


def parse_evidence_json(text: str) -> dict | None:
    """{rational, evidence, summary} from a model's reply: tolerates <think> blocks, code fences, prose around the
    JSON, 'rationale' for 'rational', lists for strings. None when there is no usable evidence or summary."""
    text = re.sub(r"(?s)^.*?</think>", "", text or "").strip()
    fenced = re.findall(r"(?s)```(?:json)?\s*(.*?)```", text)
    candidates = fenced + [text]
    for candidate in candidates:
        for match in re.finditer(r"\{", candidate):
            obj, _ = decode_json_at(candidate, match.start())
            if isinstance(obj, dict) and ("evidence" in obj or "summary" in obj):
                out = {"rational": _as_text(obj.get("rational", obj.get("rationale"))),
                       "evidence": _as_text(obj.get("evidence")), "summary": _as_text(obj.get("summary"))}
                if out["evidence"] or out["summary"]:
                    return out
    # Last resort: a JSON-looking reply that does not parse (unescaped quotes, cut off): take the fields by key.
    fields = {}
    for key in ("rational", "evidence", "summary"):
        m = re.search(rf'"{key}e?"\s*:\s*"(.*?)"\s*(?:,\s*"\w+"\s*:|\}}|$)', text, re.S)
        if m:
            fields[key] = m.group(1).replace('\\"', '"').replace("\\n", "\n").strip()
    if fields.get("evidence") or fields.get("summary"):
        return {"rational": fields.get("rational", ""), "evidence": fields.get("evidence", ""),
                "summary": fields.get("summary", "")}
    return None


class _BM25:
    """BM25 over a fixed list of passages, scored against any number of queries. One at a time: the stemmer and
    bm25s' tokenizer are not documented as thread-safe, and visits run on worker threads."""

    def __init__(self, docs: list[str]):
        import bm25s

        self.tokenizer = bm25_tokenizer()
        self.retriever = bm25s.BM25()
        self.retriever.index(self.tokenizer.tokenize(docs, show_progress=False), show_progress=False)
        self.size, self.lock = len(docs), threading.Lock()

    def scores(self, query: str):
        with self.lock:
            query_ids = self.tokenizer.tokenize([query], update_vocab=False, show_progress=False)[0]
            return self.retriever.get_scores(query_ids) if query_ids else [0.0] * self.size


def _bm25_scores(docs: list[str], query: str):
    return _BM25(docs).scores(query)


@functools.lru_cache(maxsize=64)
def _page_passages(text: str, max_words: int) -> tuple[list[str], _BM25 | None]:
    """A page's passages and their index, built once per page: the rollouts of a group visit the same pages with
    their own goals, and indexing a long page (stemming every word) costs far more than scoring a goal."""
    chunks = passages(text, max_words=max_words)
    return chunks, _BM25(chunks) if chunks else None


def extractive_evidence(text: str, goal: str, budget_tokens: int = 400) -> tuple[str, str]:
    """(evidence, summary) without a model: the page's passages ranked against the goal with BM25, the best kept
    in page order within `budget_tokens` (≈0.75 words per token); the summary is the best two sentences."""
    budget_words = max(20, int(budget_tokens * 0.75))
    chunks, index = _page_passages(text, max(20, min(80, budget_words // 3)))  # room for a few passages
    if not chunks:
        return "", ""
    scores = [float(s) for s in index.scores(goal)]
    order = sorted(range(len(chunks)), key=lambda i: (-scores[i], i)) if max(scores) > 0 else range(len(chunks))
    chosen, words = [], 0
    for i in order:
        n = len(chunks[i].split())
        if words + n > budget_words:
            if not chosen:  # the best passage alone is over budget: keep its head
                chosen.append(i)
                words = budget_words
            continue
        chosen.append(i)
        words += n
    evidence_parts = []
    for i in sorted(chosen):
        part = chunks[i]
        if len(part.split()) > budget_words:
            part = " ".join(part.split()[:budget_words - 1]) + " ..."
        evidence_parts.append(part)
    evidence = "\n\n".join(evidence_parts)
    best = chunks[order[0]] if max(scores) > 0 else chunks[0]
    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n", best) if len(s.split()) >= 3] or [best]
    sent_scores = [float(s) for s in _bm25_scores(sentences, goal)] if len(sentences) > 1 else [1.0]
    top = sorted(sorted(range(len(sentences)), key=lambda i: -sent_scores[i])[:2])
    summary = " ".join(sentences[i].strip() for i in top)
    summary = " ".join(summary.split()[:80])
    return evidence, summary

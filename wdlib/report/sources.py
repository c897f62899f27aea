"""The evidence of a report: every tool call the agent made while researching, and the numbered sources read off it.

`RecordingToolbox` wraps the real toolbox for the agent's research runs: each call goes through unchanged and
(tool, arguments, observation) is kept, whole (the agent's own context may have cut a long observation). From those
calls, `gather_sources` builds the sources a writer may cite: every page the agent visited (its main text fetched
again through the toolbox: a local page is served from the toolbox's parse cache) and every search result it saw
(title, URL, snippet). Visited pages are numbered first, in the order visited, then search results in the order seen.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from wdlib.evidence import extractive_evidence
from wdlib.react import RESULT_SEPARATOR, parse_search_results


class RecordingToolbox:
    """The agent's toolbox during research: `call` delegates to `toolbox.call` and records what it returned."""

    def __init__(self, toolbox: Any):
        self.toolbox = toolbox
        self.calls: list[dict[str, Any]] = []

    async def call(self, name: str, arguments: Any) -> str:
        observation = await self.toolbox.call(name, arguments)
        self.calls.append({"tool": name, "arguments": arguments, "observation": observation})
        return observation


@dataclass
class Source:
    url: str
    title: str
    visited: bool  # the agent visited the page (its text is known), else only a search result was seen
    text: str  # what the citation check reads: the page's main text, or the search snippets
    excerpt: str = ""  # what the writer reads: passages of the page on the topic, or the snippets
    queries: list[str] = field(default_factory=list)  # the searches that returned it
    n: int = 0  # its citation number

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Source":
        return cls(**d)


_VISIT_URL = re.compile(r"^The useful information in (?P<url>\S+) for user goal", re.M)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.S | re.I)


def _urls(arguments: Any) -> list[str]:
    urls = arguments.get("url") if isinstance(arguments, dict) else None
    urls = [urls] if isinstance(urls, str) else urls if isinstance(urls, list) else []
    return [u.strip() for u in urls if isinstance(u, str) and u.strip()]


def _queries(arguments: Any) -> list[str]:
    queries = arguments.get("query") if isinstance(arguments, dict) else None
    queries = [queries] if isinstance(queries, str) else queries if isinstance(queries, list) else []
    return [str(q).strip() for q in queries if str(q).strip()]


def _page_title(html: str, url: str) -> str:
    m = _TITLE.search(html or "")
    return re.sub(r"\s+", " ", m.group(1)).strip() if m and m.group(1).strip() else url


async def gather_sources(calls: list[dict[str, Any]], toolbox: Any, topic: str, *, max_sources: int = 20,
                         excerpt_tokens: int = 400) -> tuple[list[Source], dict[str, Any]]:
    """Numbered sources from the recorded calls, and what the research did (searches, results, visits, pages read,
    failed visits with their reasons). A visit whose page cannot be read (not in the local web, HTTP error, no text)
    is no source. A page's excerpt for the writer is its passages on the topic (BM25, like visit's extractive
    evidence)."""
    search_hits: dict[str, Source] = {}
    visited: dict[str, Source] = {}
    stats: dict[str, Any] = {"searches": 0, "search_results": 0, "visits": 0, "pages_read": 0, "failed_visits": []}
    for call in calls:
        observation = call.get("observation") or ""
        if call.get("tool") == "search":
            stats["searches"] += 1
            queries = _queries(call.get("arguments"))
            for k, part in enumerate(observation.split(RESULT_SEPARATOR)):
                query = queries[k] if k < len(queries) else ""
                for r in parse_search_results(part):
                    stats["search_results"] += 1
                    hit = search_hits.setdefault(r["url"], Source(url=r["url"], title=r["title"] or r["url"],
                                                                  visited=False, text=""))
                    if r["snippet"] and r["snippet"] not in hit.text:
                        hit.text = f"{hit.text}\n{r['snippet']}".strip()
                    if query and query not in hit.queries:
                        hit.queries.append(query)
        elif call.get("tool") == "visit":
            urls = _urls(call.get("arguments")) or _VISIT_URL.findall(observation)
            for url in urls:
                stats["visits"] += 1
                page = await toolbox.fetch(url)
                if not page.ok or not page.text.strip():
                    stats["failed_visits"].append({"url": url, "reason": page.error or "the page has no readable text"})
                    continue
                if page.url not in visited:
                    visited[page.url] = Source(url=page.url, title=_page_title(page.html, page.url), visited=True,
                                               text=page.text)
    for url, source in visited.items():
        hit = search_hits.pop(url, None)
        if hit is not None:  # the search result's title is the page's title as the agent saw it
            source.title, source.queries = hit.title, hit.queries
        source.excerpt = extractive_evidence(source.text, topic, excerpt_tokens)[0] or source.text[:2000]
    for hit in search_hits.values():
        hit.excerpt = hit.text
    sources = (list(visited.values()) + list(search_hits.values()))[:max_sources]
    for n, source in enumerate(sources, 1):
        source.n = n
    stats["pages_read"] = len(visited)
    return sources, stats


def writer_context(sources: list[Source], chars: int) -> str:
    """The sources as the writer reads them, about `chars` characters in all: `[n] title — URL`, whether the page was
    read or only its search snippet seen, then its excerpt (cut evenly so every source gets a share)."""
    if not sources:
        return "(no sources)"
    header = [f"[{s.n}] {s.title} — {s.url}\n({'page read' if s.visited else 'search result only'})" for s in sources]
    share = max(200, (chars - sum(len(h) + 2 for h in header)) // len(sources))
    blocks = []
    for head, s in zip(header, sources):
        excerpt = re.sub(r"\s*\n\s*", "\n", s.excerpt.replace("¶", "")).strip()
        if len(excerpt) > share:
            excerpt = excerpt[:share].rsplit(" ", 1)[0] + " ..."
        blocks.append(f"{head}\n{excerpt}")
    return "\n\n".join(blocks)

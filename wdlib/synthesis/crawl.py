"""The CrawlQA crawl: walk a site breadth-first from root URLs through `Toolbox.fetch` (the loopback web offline,
live HTTP online), inside the site (same host as a root, or the `allow` regexes), minus `deny`, with depth and page
limits and a semaphore for polite concurrency. Every page keeps its text, headings and links (`CrawledPage`, one per
line of the run's `crawl.jsonl`): the text is what QA is grounded in, the structure what the templates read.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import urldefrag, urljoin, urlsplit

from tqdm.auto import tqdm

from wdlib.text import clean_text
from wdlib.trajectory import read_jsonl

_ASSET = re.compile(r"\.(png|jpe?g|gif|svg|ico|css|js|map|zip|tar|gz|bz2|xz|pdf|epub|txt|json|xml)$", re.I)


# ================================================================== pages
class _Structure(HTMLParser):
    """Title, headings and anchors of an HTML page (stdlib parser: tolerant, no dependency)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.title, self.headings, self.anchors = "", [], []  # headings: (level, text); anchors: (href, text)
        self._tag, self._buf, self._href = None, [], None

    def handle_starttag(self, tag, attrs):
        if tag in ("title", "h1", "h2", "h3"):
            self._tag, self._buf = tag, []
        elif tag == "a":
            href = dict(attrs).get("href")
            if href:
                self._href, self._abuf = href, []

    def handle_endtag(self, tag):
        if tag == self._tag:
            text = clean_text(" ".join(self._buf))
            if tag == "title":
                self.title = text
            elif text:
                self.headings.append((int(tag[1]), text))
            self._tag = None
        elif tag == "a" and self._href is not None:
            self.anchors.append((self._href, clean_text(" ".join(self._abuf))))
            self._href = None

    def handle_data(self, data):
        if self._tag:
            self._buf.append(data)
        if self._href is not None:
            self._abuf.append(data)



@dataclass
class CrawledPage:
    """A crawled page: its text (what QA is grounded in) and its structure (what templates read)."""

    url: str
    title: str = ""
    text: str = ""
    headings: list[tuple[int, str]] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # absolute, defragmented, in page order, unique
    anchors: dict[str, str] = field(default_factory=dict)  # link url → its first non-empty anchor text
    depth: int = 0
    parent: str | None = None

    @property
    def name(self) -> str:
        """The page's own heading (h1), else its <title>."""
        h1 = [t for level, t in self.headings if level == 1]
        return h1[0] if h1 else self.title

    @property
    def sections(self) -> list[str]:
        return [t for level, t in self.headings if level == 2]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CrawledPage":
        d = dict(d)
        d["headings"] = [tuple(h) for h in d.get("headings", [])]
        return cls(**d)


def page_from_fetch(fetched: Any, depth: int = 0, parent: str | None = None) -> CrawledPage:
    """Build a CrawledPage from `Toolbox.fetch`'s FetchedPage (url, status, content_type, html, text, links, error)."""
    html = getattr(fetched, "html", "") or ""
    parser = _Structure()
    try:
        parser.feed(html)
    except Exception:  # a broken page still has its text; structure is best effort
        pass
    base = fetched.url
    links, anchors = [], {}
    for href, text in parser.anchors:
        url = normalize_url(href, base)
        if url is None:
            continue
        if url not in anchors or (not anchors[url] and text):
            anchors[url] = text
        links.append(url)
    for link in getattr(fetched, "links", None) or []:  # the toolbox's own link list, if it has one
        href = link if isinstance(link, str) else (link.get("url") or link.get("href") or "")
        url = normalize_url(href, base)
        if url is not None:
            links.append(url)
            anchors.setdefault(url, "" if isinstance(link, str) else clean_text(link.get("text") or ""))
    return CrawledPage(url=base, title=parser.title, text=getattr(fetched, "text", "") or "", headings=parser.headings,
                links=list(dict.fromkeys(u for u in links if u != base)), anchors=anchors, depth=depth,
                parent=parent)


def normalize_url(href: str, base: str) -> str | None:
    """Absolute http(s) URL without fragment; None for mailto:, javascript:, empty or same-page anchors."""
    href = (href or "").strip()
    if not href or href.startswith(("#", "mailto:", "javascript:", "tel:", "data:")):
        return None
    url, _ = urldefrag(urljoin(base, href))
    return url if urlsplit(url).scheme in ("http", "https") else None


# ================================================================== crawl
class SiteScope:
    """Which URLs a crawl may visit: inside the roots' sites (or matching an `allow` regex) and no `deny` match."""

    def __init__(self, roots: Iterable[str], allow: Iterable[str] = (), deny: Iterable[str] = ()):
        self.hosts = {urlsplit(r).netloc.lower() for r in roots}
        self.allow = [re.compile(p) for p in allow]
        self.deny = [re.compile(p) for p in deny]

    def __call__(self, url: str) -> bool:
        if any(p.search(url) for p in self.deny) or _ASSET.search(urlsplit(url).path):
            return False
        if self.allow:
            return any(p.search(url) for p in self.allow)
        return urlsplit(url).netloc.lower() in self.hosts


@dataclass
class CrawlResult:
    pages: list[CrawledPage]
    errors: dict[str, str] = field(default_factory=dict)  # url → why it was not kept
    out_of_scope: set[str] = field(default_factory=set)  # linked from a kept page, not visited (outside the site)


async def crawl(fetch: Callable[[str], Awaitable[Any]], roots: list[str], *, max_depth: int = 2,
                max_pages: int = 200, allow: Iterable[str] = (), deny: Iterable[str] = (), concurrency: int = 4,
                delay_s: float = 0.0, progress: bool = True,
                on_page: Callable[[CrawledPage], None] | None = None) -> CrawlResult:
    """Breadth-first crawl. `fetch` is `Toolbox.fetch` (url → FetchedPage). Pages are kept in BFS order; a level
    is fetched concurrently (at most `concurrency` requests in flight, `delay_s` after each) and stops as soon as
    `max_pages` pages are kept. Only HTML pages with status 200 are kept; links are followed to `max_depth`."""
    scope = SiteScope(roots, allow, deny)
    semaphore = asyncio.Semaphore(concurrency)
    result = CrawlResult(pages=[])
    seen: set[str] = set()
    level: list[tuple[str, str | None]] = []
    for root in roots:
        url = normalize_url(root, root)
        if url and url not in seen:
            seen.add(url)
            level.append((url, None))

    async def fetch_one(url: str):
        async with semaphore:
            try:
                fetched = await fetch(url)
            except Exception as exc:  # the toolbox should not raise; a crawler must not die if it does
                return exc
            if delay_s:
                await asyncio.sleep(delay_s)
            return fetched

    bar = tqdm(total=max_pages, desc="crawl", unit="page", disable=not progress)
    depth = 0
    while level and depth <= max_depth and len(result.pages) < max_pages:
        next_level: list[tuple[str, str | None]] = []
        i = 0
        while i < len(level) and len(result.pages) < max_pages:
            batch = level[i:i + max_pages - len(result.pages)]
            i += len(batch)
            fetched_batch = await asyncio.gather(*(fetch_one(url) for url, _ in batch))
            for (url, parent), fetched in zip(batch, fetched_batch):
                problem = unusable(fetched)
                final = getattr(fetched, "url", url) or url
                if problem is None and final != url and (final in seen or not scope(final)):
                    problem = f"redirected to {final}"  # already kept, or out of the site
                if problem:
                    result.errors[url] = problem
                    continue
                seen.add(final)
                page = page_from_fetch(fetched, depth=depth, parent=parent)
                if len(result.pages) >= max_pages:
                    break
                result.pages.append(page)
                bar.update(1)
                if on_page:
                    on_page(page)
                for link in page.links:
                    if link in seen:
                        continue
                    if not scope(link):
                        result.out_of_scope.add(link)
                        continue
                    if depth < max_depth:
                        seen.add(link)
                        next_level.append((link, page.url))
        level, depth = next_level, depth + 1
    bar.close()
    return result


def unusable(fetched: Any) -> str | None:
    if isinstance(fetched, Exception):
        return f"{type(fetched).__name__}: {fetched}"
    if getattr(fetched, "error", None):
        return str(fetched.error)
    status = getattr(fetched, "status", 200)
    if status != 200:
        return f"HTTP {status}"
    ctype = (getattr(fetched, "content_type", "") or "text/html").lower()
    if "html" not in ctype:
        return f"not HTML ({ctype})"
    return None


def load_crawl(path: str | Path) -> list[CrawledPage]:
    return [CrawledPage.from_dict(r) for r in read_jsonl(path)]

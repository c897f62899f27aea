"""Data synthesis: CrawlQA (crawl a site, write QA grounded in its pages), E2HQA (make easy questions hard), and
teacher trajectories with rejection sampling.

CrawlQA. `crawl()` walks a site breadth-first from root URLs through `Toolbox.fetch` (the loopback web offline,
live HTTP online), inside the site (same host as a root, or the `allow` regexes), minus `deny`, with depth and page
limits and a semaphore for polite concurrency. Every page keeps its text, headings and links (`crawl.jsonl`).
QA pairs of types COUNT, MULTI-HOP and INTERSECTION come from two generators:
  - `llm`: the teacher reads one page (COUNT), a linked pair (MULTI-HOP) or two pages sharing links (INTERSECTION)
    and writes a JSON record; JSON-constrained decoding is requested where the backend has it (`json_constraint`),
    and an in-process model gets the record's opening `{"question": "` written for it;
  - `template`: deterministic questions read off the crawl graph, so a tiny teacher still yields real, checkable
    data. COUNT: "how many top-level sections does page X have" (its <h2> headings); MULTI-HOP: follow the link
    labelled L on page A, ask for the first section heading of the page it leads to; INTERSECTION: the one page
    linked from both A and B (navigation links shared by most pages excluded).
Every record is validated (`validate_qa`): schema, short answer, answer not in the question, evidence URLs among the
crawled pages, answer present in the evidence text (COUNT: a number) — then deduplicated.

E2HQA. From a seed question with answer A, each hop picks an entity of the question (entities the seed page links
to, quoted titles, then capitalized spans), searches it, checks the top result is about it, and rewrites the entity
as a description built from the results (the teacher; when its rewrite is unusable, a template from the result
page's defining sentence "X is a …"). The answer never changes; a rewrite that leaks it is rejected. Every hop is
recorded and the number of hops is the difficulty. Seeds: a QA file, or simple "who or what is …?" questions made
from encyclopedia pages.

Trajectories. `sample_trajectories` runs the teacher agent over QA pairs in rounds: round k samples every question
that has no passing trajectory yet (sample index k), appends each trajectory to JSONL as it finishes, then runs the
filter funnel; a question stops at its first passing sample (rejection sampling). Re-running skips finished
(question, sample) pairs, so an interrupted run loses nothing it finished.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import string
from collections import Counter
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import urldefrag, urljoin, urlsplit

from tqdm.auto import tqdm

from wdlib.trajectory import QAPair, Trajectory, append_jsonl, load_trajectories, read_jsonl, write_jsonl

QA_TYPES = ("COUNT", "MULTI-HOP", "INTERSECTION")
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
            text = _clean(" ".join(self._buf))
            if tag == "title":
                self.title = text
            elif text:
                self.headings.append((int(tag[1]), text))
            self._tag = None
        elif tag == "a" and self._href is not None:
            self.anchors.append((self._href, _clean(" ".join(self._abuf))))
            self._href = None

    def handle_data(self, data):
        if self._tag:
            self._buf.append(data)
        if self._href is not None:
            self._abuf.append(data)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("¶", "").replace("\u00b6", "")).strip()


@dataclass
class Page:
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
    def from_dict(cls, d: dict) -> "Page":
        d = dict(d)
        d["headings"] = [tuple(h) for h in d.get("headings", [])]
        return cls(**d)


def page_from_fetch(fetched: Any, depth: int = 0, parent: str | None = None) -> Page:
    """Build a Page from `Toolbox.fetch`'s FetchedPage (url, status, content_type, html, text, links, error)."""
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
            anchors.setdefault(url, "" if isinstance(link, str) else _clean(link.get("text") or ""))
    return Page(url=base, title=parser.title, text=getattr(fetched, "text", "") or "", headings=parser.headings,
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
    pages: list[Page]
    errors: dict[str, str] = field(default_factory=dict)  # url → why it was not kept
    out_of_scope: set[str] = field(default_factory=set)  # linked from a kept page, not visited (outside the site)


async def crawl(fetch: Callable[[str], Awaitable[Any]], roots: list[str], *, max_depth: int = 2,
                max_pages: int = 200, allow: Iterable[str] = (), deny: Iterable[str] = (), concurrency: int = 4,
                delay_s: float = 0.0, progress: bool = True,
                on_page: Callable[[Page], None] | None = None) -> CrawlResult:
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
                problem = _unusable(fetched)
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


def _unusable(fetched: Any) -> str | None:
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


def load_pages(path: str | Path) -> list[Page]:
    return [Page.from_dict(r) for r in read_jsonl(path)]


# ================================================================== QA validation
_ARTICLES = {"a", "an", "the"}
_STOP = _ARTICLES | {"of", "and", "or", "in", "on", "to", "for", "is", "was", "by", "with", "at", "from", "as"}
_WORD_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


def normalize(text: str) -> str:
    """SQuAD-style normalisation: lowercase, drop punctuation and articles, squeeze spaces."""
    text = "".join(" " if ch in string.punctuation or ch in "“”‘’—–" else ch for ch in str(text).lower())
    return " ".join(w for w in text.split() if w not in _ARTICLES)


def _content_words(text: str) -> list[str]:
    return [w for w in normalize(text).split() if w not in _STOP]


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
    words = _content_words(answer)
    return bool(words) and set(words) <= set(t.split())


def leaks(answer: str, question: str) -> bool:
    """The question gives the answer away (contains it as a phrase, or all of its content words)."""
    return answer_in_text(answer, question)


def validate_qa(record: Any, pages: dict[str, Page], *, types: Iterable[str] = QA_TYPES,
                max_answer_words: int = 12, default_evidence: list[str] | None = None) -> tuple[dict | None, str]:
    """Check one generated QA record. Returns (clean record, "ok") or (None, reason)."""
    if not isinstance(record, dict):
        return None, f"not a JSON object ({type(record).__name__})"
    question, answer = record.get("question"), record.get("answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(question, str) or not question.strip():
        return None, "missing question"
    if not isinstance(answer, str) or not answer.strip():
        return None, "missing answer"
    question, answer = _clean(question), _clean(answer).rstrip(".")
    qtype = str(record.get("type", "")).strip().upper().replace("_", "-").replace("MULTIHOP", "MULTI-HOP")
    if qtype not in set(types):
        return None, f"type {qtype or '<none>'} not one of {sorted(types)}"
    if "?" not in question:
        return None, "not a question (no '?')"
    if len(question.split()) < 5:
        return None, "question too short"
    if len(answer.split()) > max_answer_words:
        return None, f"answer longer than {max_answer_words} words"
    evidence = record.get("evidence_urls") or default_evidence or []
    if isinstance(evidence, str):
        evidence = [evidence]
    if not isinstance(evidence, list) or not evidence:
        return None, "no evidence_urls"
    unknown = [u for u in evidence if u not in pages]
    if unknown:
        return None, f"evidence URL not among the crawled pages: {unknown[0]}"
    if leaks(answer, question):
        return None, "answer appears in the question"
    if qtype == "COUNT":
        if as_number(answer) is None:
            return None, "COUNT answer is not a number"
    elif not any(answer_in_text(answer, pages[u].text) for u in evidence):
        return None, "answer not found in the evidence pages"
    return {"question": question, "answer": answer, "type": qtype, "evidence_urls": list(dict.fromkeys(evidence))}, "ok"


def dedupe(qa: Iterable[QAPair]) -> list[QAPair]:
    """Drop repeated questions (after normalisation); the first occurrence wins."""
    seen, out = set(), []
    for q in qa:
        key = normalize(q.question)
        if key not in seen:
            seen.add(key)
            out.append(q)
    return out


# ================================================================== template CrawlQA
_NAV_ANCHORS = {"next", "previous", "index", "modules", "home", "up", "top", "back", "contents", "search",
                "show source", "report a bug", "here", "this", "link", "source", "documentation", ""}


def _site(url: str) -> str:
    return urlsplit(url).netloc


def _navigation_links(pages: list[Page], share: float = 0.3) -> set[str]:
    """Links present on more than `share` of the pages: menus and footers, not content."""
    counts = Counter(link for p in pages for link in set(p.links))
    limit = max(2, share * len(pages))
    return {link for link, n in counts.items() if n > limit}


def _pairs_sharing_links(pages: list[Page], nav: set[str], rng: random.Random,
                         max_per_link: int = 50) -> dict[tuple[str, str], set[str]]:
    """(page a, page b) → the content links both have, through an inverted index (not all n² pairs: a crawl of
    60k pages would take hours); a link on more than `max_per_link` pages contributes a random sample of them."""
    linking: dict[str, list[str]] = {}
    for p in pages:
        for link in set(p.links) - nav - {p.url}:
            linking.setdefault(link, []).append(p.url)
    pairs: dict[tuple[str, str], set[str]] = {}
    for link in sorted(linking):
        sources = sorted(linking[link])
        if len(sources) > max_per_link:
            sources = sorted(rng.sample(sources, max_per_link))
        for i, a in enumerate(sources):
            for b in sources[i + 1:]:
                pairs.setdefault((a, b), set()).add(link)
    return pairs


def _display_names(pages: list[Page]) -> dict[str, str]:
    """url → the page's name with a site-wide title suffix (" — Python 3.11 documentation") removed."""
    names = {}
    suffix = ""
    titles = [p.title for p in pages if p.title]
    if len(titles) >= 2:
        for sep in (" — ", " | ", " - ", " – "):
            tails = Counter(t.rsplit(sep, 1)[1] for t in titles if sep in t)
            if tails:
                tail, n = tails.most_common(1)[0]
                if n >= 0.5 * len(titles):
                    suffix = sep + tail
                    break
    for p in pages:
        h1 = [t for level, t in p.headings if level == 1]
        title = p.title[:-len(suffix)] if suffix and p.title.endswith(suffix) else p.title
        names[p.url] = _clean(h1[0] if h1 else title)
    return names


def template_qa(pages: list[Page], n: int, *, types: Iterable[str] = QA_TYPES, seed: int = 0,
                max_answer_words: int = 12) -> list[QAPair]:
    """Deterministic QA read off the crawl graph, balanced over types, each validated like LLM output."""
    by_url = {p.url: p for p in pages}
    names = _display_names(pages)
    nav = _navigation_links(pages)
    rng = random.Random(seed)
    candidates: dict[str, list[dict]] = {t: [] for t in types}

    for p in pages:
        site, name = _site(p.url), names[p.url]
        if "COUNT" in candidates and len(p.sections) >= 2 and name:
            candidates["COUNT"].append({
                "question": f"On {site}, how many top-level sections does the page “{name}” have?",
                "answer": str(len(p.sections)), "type": "COUNT", "evidence_urls": [p.url],
                "provenance": {"template": "count_sections", "sections": p.sections}})
        if "MULTI-HOP" in candidates:
            for link in p.links:
                target, anchor = by_url.get(link), p.anchors.get(link, "")
                if (target is None or link in nav or not target.sections or anchor.lower() in _NAV_ANCHORS
                        or len(anchor) < 3 or not name):
                    continue
                candidates["MULTI-HOP"].append({
                    "question": (f"On {site}, the page “{name}” links to another page through the link text "
                                 f"“{anchor}”. What is the title of the first section of the page it leads to?"),
                    "answer": target.sections[0], "type": "MULTI-HOP", "evidence_urls": [p.url, target.url],
                    "provenance": {"template": "link_then_first_section", "chain": [p.url, target.url]}})
    if "INTERSECTION" in candidates:
        for (a_url, b_url), common in _pairs_sharing_links(pages, nav, rng).items():
            a, b = by_url[a_url], by_url[b_url]
            common -= {a.url, b.url}
            if len(common) != 1 or not names[a.url] or not names[b.url] or names[a.url] == names[b.url]:
                continue
            (target,) = common
            if target in by_url:  # a crawled page: its own name, grounded in its own text
                answer, evidence = names[target], [a.url, b.url, target]
            else:  # not crawled: the link text, which both pages must show
                answer, evidence = a.anchors.get(target, ""), [a.url, b.url]
                if not answer_in_text(answer, b.text):
                    continue
            if not answer or answer.lower() in _NAV_ANCHORS:
                continue
            candidates["INTERSECTION"].append({
                "question": (f"On {_site(a.url)}, what is the title of the page linked from both the page "
                             f"“{names[a.url]}” and the page “{names[b.url]}”?"),
                "answer": answer, "type": "INTERSECTION", "evidence_urls": evidence,
                "provenance": {"template": "common_link", "target": target}})

    out: list[QAPair] = []
    used_answers: set[tuple[str, str]] = set()
    pools = {}
    for t, cands in candidates.items():
        rng.shuffle(cands)
        pools[t] = cands
    while len(out) < n and any(pools.values()):  # round-robin over types: balanced while each has candidates
        for t in list(pools):
            while pools[t]:
                cand = pools[t].pop()
                clean, _ = validate_qa(cand, by_url, types=types, max_answer_words=max_answer_words)
                if clean is None or (t != "COUNT" and (t, normalize(clean["answer"])) in used_answers):
                    continue  # one question per answer (per type) keeps the set diverse
                used_answers.add((t, normalize(clean["answer"])))
                qa = QAPair(**clean, source="crawlqa", difficulty=len(clean["evidence_urls"]),
                            provenance={"generator": "template", **cand["provenance"]})
                if all(normalize(qa.question) != normalize(o.question) for o in out):
                    out.append(qa)
                    break
            if len(out) >= n:
                break
    return out


# ================================================================== LLM CrawlQA
QA_JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "question": {"type": "string"},
        "answer": {"type": "string"},
        "type": {"type": "string", "enum": list(QA_TYPES)},
        "evidence_urls": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["question", "answer", "type", "evidence_urls"],
    "additionalProperties": False,
}

_TYPE_INSTRUCTIONS = {
    "COUNT": "a COUNT question: it asks how many items of some kind the page has (sections, functions, options, "
             "listed entries...); the answer is a number you counted in the page",
    "MULTI-HOP": "a MULTI-HOP question: it can only be answered by reading the first page, following its link to the "
                 "second page and reading a fact there; the answer is a short phrase copied from the second page",
    "INTERSECTION": "an INTERSECTION question: it asks for something the two pages have in common (a term, module, "
                    "function or topic that appears in both); the answer is a short phrase present in both pages",
}


def json_constraint(spec: Any, schema: dict = QA_JSON_SCHEMA) -> dict:
    """Sampling kwargs that make the backend emit JSON matching `schema`, where it can.

    openai backend (OpenAI, vLLM serve, any compatible server): `response_format` with a json_schema, which vLLM
    serve also honours with guided decoding. In-process vLLM: `structured_outputs={"json": schema}` (vLLM's
    `StructuredOutputsParams`). In-process transformers has no constrained decoding: {} and we rely on parsing.
    """
    backend = getattr(spec, "backend", None)
    if backend == "openai":
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "qa_pair", "schema": schema, "strict": True}}}
    if backend == "vllm":
        return {"structured_outputs": {"json": schema}}
    return {}


def crawlqa_prompt(qtype: str, pages: list[Page], max_page_chars: int = 3000) -> list[dict]:
    """Chat messages asking the teacher for one QA pair of `qtype` grounded in `pages`."""
    blocks = []
    for i, p in enumerate(pages, 1):
        links = ""
        if qtype == "MULTI-HOP" and i == 1 and len(pages) > 1:
            links = f"\n(This page links to {pages[1].url})"
        blocks.append(f"### Page {i}\nURL: {p.url}\nTitle: {p.title}{links}\n\n{p.text[:max_page_chars]}")
    system = ("You write question-answer pairs for training web-browsing agents. Questions must be answerable only "
              "by reading the given web pages, must not contain their answer, and have a short answer (a number, "
              "name or phrase of at most a few words). Reply with one JSON object and nothing else.")
    user = ("\n\n".join(blocks) + f"\n\nWrite {_TYPE_INSTRUCTIONS[qtype]}.\n"
            'Reply with JSON: {"question": "...", "answer": "...", "type": "' + qtype + '", '
            '"evidence_urls": [the URLs of the pages needed]}')
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_json_objects(text: str) -> list[Any]:
    """Every JSON object/array found in model output: code fences, prose around it, several objects, trailing
    commas and single-quoted keys are tolerated. A list found at top level is flattened."""
    if not isinstance(text, str):
        return []
    text = re.sub(r"```(?:json)?", "", text)
    found, i = [], 0
    decoder = json.JSONDecoder()
    while i < len(text):
        start = min((j for j in (text.find("{", i), text.find("[", i)) if j >= 0), default=-1)
        if start < 0:
            break
        obj, end = _decode_at(decoder, text, start)
        if obj is None:
            i = start + 1
            continue
        found.extend(obj if isinstance(obj, list) else [obj])
        i = end
    return [o for o in found if isinstance(o, dict)]


def _decode_at(decoder: json.JSONDecoder, text: str, start: int) -> tuple[Any, int]:
    try:
        return decoder.raw_decode(text, start)
    except json.JSONDecodeError:
        pass
    # Repair the usual slips of small models on the balanced span: trailing commas, single quotes.
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
    except json.JSONDecodeError:
        return None, start


_JSON_PREFIX = '{"question": "'


async def _json_reply(client: Any, messages: list[dict], sampling: dict) -> str:
    """The teacher's reply to a JSON request. Without constrained decoding, a token-level (in-process) client gets
    the reply's first tokens written for it (`{"question": "`) and stops at the closing brace: a cheap nudge that
    lets even a tiny model produce a parseable record."""
    if sampling.get("response_format") or sampling.get("structured_outputs") or not getattr(client, "token_level", False):
        return (await client.chat(messages, **sampling)).text
    prefix_ids = client.tokenizer(_JSON_PREFIX, add_special_tokens=False)["input_ids"]
    reply = await client.generate(client.encode_prompt(messages) + prefix_ids, stop=("}",), **sampling)
    return _JSON_PREFIX + reply.text


def crawlqa_tasks(pages: list[Page], types: Iterable[str], n: int, seed: int = 0) -> list[tuple[str, list[Page]]]:
    """(type, pages) prompts for the teacher: single pages for COUNT, linked pairs for MULTI-HOP, pairs sharing
    content links for INTERSECTION; `n` tasks round-robin over the types."""
    rng = random.Random(seed)
    by_url = {p.url: p for p in pages}
    nav = _navigation_links(pages)
    rich = [p for p in pages if len(p.text) > 200]
    pools: dict[str, list[list[Page]]] = {}
    for t in types:
        if t == "COUNT":
            pools[t] = [[p] for p in rich]
        elif t == "MULTI-HOP":
            pools[t] = [[p, by_url[l]] for p in rich for l in p.links
                        if l in by_url and l not in nav and len(by_url[l].text) > 200]
        else:
            pools[t] = [[by_url[a], by_url[b]] for a, b in _pairs_sharing_links(rich, nav, rng)]
        rng.shuffle(pools[t])
    tasks = []
    while len(tasks) < n and any(pools.values()):
        for t in list(pools):
            if pools[t] and len(tasks) < n:
                tasks.append((t, pools[t].pop()))
    return tasks


async def llm_qa(pages: list[Page], client: Any, n_calls: int, *, spec: Any = None, types: Iterable[str] = QA_TYPES,
                 max_answer_words: int = 12, max_page_chars: int = 3000, max_new_tokens: int = 256,
                 temperature: float = 0.7, concurrency: int = 8, seed: int = 0, teacher: str = "",
                 progress: bool = True) -> tuple[list[QAPair], Counter]:
    """Ask the teacher for QA pairs (`n_calls` prompts) and keep the valid ones. Returns (qa, rejection reasons)."""
    by_url = {p.url: p for p in pages}
    tasks = crawlqa_tasks(pages, types, n_calls, seed)
    sampling = {"temperature": temperature, "max_new_tokens": max_new_tokens, **json_constraint(spec)}
    semaphore = asyncio.Semaphore(concurrency)
    reasons: Counter = Counter()
    out: list[QAPair] = []
    bar = tqdm(total=len(tasks), desc="crawlqa llm", unit="prompt", disable=not progress)

    async def one(qtype: str, group: list[Page]):
        async with semaphore:
            try:
                text = await _json_reply(client, crawlqa_prompt(qtype, group, max_page_chars), sampling)
            except Exception as exc:  # one failed request costs one QA pair, not the stage
                reasons[f"request failed: {type(exc).__name__}"] += 1
                text = None
        bar.update(1)
        if text is None:
            return
        records = parse_json_objects(text)
        if not records:
            reasons["no JSON object in the reply"] += 1
        for record in records[:1]:
            if isinstance(record, dict):
                record.setdefault("type", qtype)
            clean, why = validate_qa(record, by_url, types=types, max_answer_words=max_answer_words,
                                     default_evidence=[p.url for p in group])
            reasons[why] += 1
            if clean:
                out.append(QAPair(**clean, source="crawlqa", difficulty=len(clean["evidence_urls"]),
                                  provenance={"generator": "llm", "teacher": teacher, "prompt_type": qtype,
                                              "prompt_pages": [p.url for p in group]}))

    await asyncio.gather(*(one(t, g) for t, g in tasks))
    bar.close()
    return dedupe(out), reasons


async def crawlqa(pages: list[Page], cfg: Any, client: Any = None, *, progress: bool = True) -> tuple[list[QAPair], dict]:
    """CrawlQA from crawled pages per `cfg.synthesis.crawlqa` (generator llm | template | both).
    `both`: the teacher's valid pairs first, templates fill up to `num_qa`. Returns (qa, report)."""
    c = cfg.synthesis.crawlqa
    report: dict[str, Any] = {"pages": len(pages)}
    qa: list[QAPair] = []
    if c.generator in ("llm", "both") and c.num_qa:
        if client is None:
            raise ValueError("synthesis.crawlqa.generator needs the teacher model: pass client=")
        n_calls = c.llm_calls or 2 * c.num_qa
        spec = cfg.models.teacher
        llm_pairs, reasons = await llm_qa(pages, client, n_calls, spec=spec, types=c.types,
                                          max_answer_words=c.max_answer_words, max_page_chars=c.max_page_chars,
                                          max_new_tokens=c.max_new_tokens, temperature=c.temperature,
                                          concurrency=spec.concurrency, seed=cfg.run.seed, teacher=spec.name,
                                          progress=progress)
        qa.extend(llm_pairs[:c.num_qa])
        report["llm"] = {"prompts": n_calls, "valid": len(llm_pairs), "reasons": dict(reasons)}
    if c.generator in ("template", "both") and len(qa) < c.num_qa:
        templates = template_qa(pages, c.num_qa - len(qa), types=c.types, seed=cfg.run.seed,
                                max_answer_words=c.max_answer_words)
        qa.extend(templates)
        report["template"] = len(templates)
    qa = dedupe(qa)
    report["by_type"] = dict(Counter(q.type for q in qa))
    return qa, report


# ================================================================== E2HQA
_QUESTION_WORDS = {"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "in", "on", "at", "the",
                   "a", "an", "this", "that", "these", "identify", "name", "is", "was", "are", "were", "does", "did",
                   "do", "can", "for", "of", "and", "by", "to", "from", "with", "as", "it", "its"}
_CONNECTORS = {"of", "the", "de", "la", "von", "van", "for", "du", "del", "di"}  # not "and": it joins two names
_QUOTED = re.compile(r"[\"“]([^\"”]{2,80})[\"”]")


def pick_entities(question: str, avoid: Iterable[str] = ()) -> list[str]:
    """Candidate entities of a question, best first: quoted titles, then capitalized spans (longest first).
    Spans overlapping anything in `avoid` (the answer, entities already rewritten) are skipped."""
    avoid_norm = [normalize(a) for a in avoid if normalize(a)]
    found: list[str] = [m.group(1).strip().strip(string.punctuation + " ") for m in _QUOTED.finditer(question)]
    unquoted = _QUOTED.sub(" ; ", question)  # a quoted title ends the capitalized span around it
    tokens = re.findall(r"[\w'’.-]+|[^\w\s]", unquoted)
    span: list[str] = []
    spans: list[str] = []
    for i, tok in enumerate(tokens + ["."]):
        word = tok.strip(".")
        capital = word[:1].isupper() or (word[:1].isdigit() and span)
        sentence_start = i == 0 or tokens[i - 1] in ".?!:;"
        if capital and not (sentence_start and word.lower() in _QUESTION_WORDS):
            span.append(word)
        elif span and word.lower() in _CONNECTORS and i + 1 < len(tokens) and tokens[i + 1][:1].isupper():
            span.append(word)
        else:
            while span and span[-1].lower() in _CONNECTORS:
                span.pop()
            if span:
                spans.append(" ".join(span))
            span = []
    found += sorted(spans, key=lambda s: -len(s))
    out = []
    for ent in found:
        norm = normalize(ent)
        if not norm or len(ent) < 3 or norm in _QUESTION_WORDS or ent in out:
            continue
        if any(norm in a or a in norm for a in avoid_norm):
            continue
        out.append(ent)
    return out


_RESULT = re.compile(r"^\s*\d+\.\s*\[(?P<title>.*?)\]\((?P<url>[^)\s]+)\)\s*$", re.M)


def parse_search_results(rendered: str) -> list[dict]:
    """The search tool's WebDancer-shaped text → [{"title", "url", "snippet"}] (first query's results first)."""
    results = []
    matches = list(_RESULT.finditer(rendered or ""))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(rendered)
        snippet = rendered[m.end():end].split("\n=======\n")[0]
        results.append({"title": m.group("title").strip(), "url": m.group("url").strip(),
                        "snippet": _clean(snippet)})
    return results


async def search_results(toolbox: Any, query: str) -> list[dict]:
    """[{"title", "url", "snippet"}] for one query: the toolbox's structured results where it has them, else its
    rendered search observation parsed back. A failed search is no results."""
    try:
        if hasattr(toolbox, "search_results"):
            return [{"title": r.get("title", ""), "url": r.get("link") or r.get("url", ""),
                     "snippet": r.get("snippet", "")} for r in await toolbox.search_results(query)]
        return parse_search_results(await toolbox.search([query]))
    except Exception:
        return []


def _title_name(title: str) -> str:
    """The subject of a result title: "Santa Claus (horse) - Wikipedia" → "Santa Claus"."""
    name = re.split(r" - | — | \| ", title)[0]
    return re.sub(r"\s*\([^)]*\)", "", name).strip()


def _about(result: dict, entity: str) -> bool:
    """The result is about the entity itself: the entity's words make up most of the title's subject
    ("Japanese" is not about "Japanese literature"; "Santa Claus" is about "Santa Claus (horse)")."""
    words, title = set(_content_words(entity)), set(_content_words(_title_name(result["title"])))
    common = words & title
    return bool(common) and len(common) >= 0.8 * len(words) and len(common) >= 0.67 * len(title)


def _resolve(entity: str, question: str, results: list[dict]) -> tuple[str, list[dict]]:
    """The results about the entity. A result whose subject is a longer phrase of the question containing the
    entity ("Carnatic" → "Carnatic music") widens the entity to that phrase."""
    about = [r for r in results if _about(r, entity)]
    if about:
        return entity, about
    for r in results:
        name = _title_name(r["title"])
        at = question.lower().find(name.lower())
        if at >= 0 and set(_content_words(entity)) <= set(_content_words(name)):
            wider = question[at:at + len(name)]
            return wider, [x for x in results if _about(x, wider)]
    return entity, []


_CLAUSE = re.compile(r",\s|;\s|\s(?=(?:which|who|whose|that|and|where|when|while|but)\s)")


def describe(name: str, text: str, max_words: int = 25) -> str | None:
    """A description of `name` from a text about it, without naming it, taken from its defining sentence:
    "Alan Moore (born 1953) is an English author known for…" → "an English author known for…". Cut at a clause
    boundary to at most `max_words` words. None when the text has no such sentence or the description would
    still give the name away."""
    text = re.sub(r"\s*\([^)]*\)", "", _clean(text))  # "(born 1953)", pronunciations
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


def template_rewrite(question: str, entity: str, description: str) -> str:
    """Replace the entity by its description; "the Americas" + "a landmass…" → "a landmass…" (one article)."""
    article = re.search(rf"\b(the|a|an)\s+{re.escape(entity)}", question, flags=re.I)
    if article and re.match(r"(a|an|the|one)\b", description, flags=re.I):
        return question[:article.start()] + description + question[article.end():]
    return question.replace(entity, description, 1)


def rewrite_prompt(question: str, entity: str, results: list[dict]) -> list[dict]:
    evidence = "\n".join(f"- {r['title']}: {r['snippet']}" for r in results[:3])
    return [
        {"role": "system", "content": "You make questions harder by replacing a named entity with a description "
                                      "of it, so that a reader must first find out what it is."},
        {"role": "user", "content": f"Question: {question}\nEntity to replace: {entity}\nWhat the web says about "
                                    f"it:\n{evidence}\n\nRewrite the question, replacing \"{entity}\" with a short "
                                    "description built from these facts, without naming it. Keep the rest of the "
                                    "question unchanged. Reply with the rewritten question only."},
    ]


def check_rewrite(new: str, old: str, entity: str, answer: str) -> str | None:
    """Why a rewritten question is unusable, or None when it is fine."""
    new = _clean(new or "")
    if not new.endswith("?"):
        return "not a question"
    if leaks(answer, new):
        return "leaks the answer"
    if normalize(entity) in normalize(new):
        return "still names the entity"
    kept = set(_content_words(old)) - set(_content_words(entity))
    if kept and len(kept & set(_content_words(new))) < 0.6 * len(kept):
        return "drops the rest of the question"
    if len(new.split()) > 2 * len(old.split()) + 60:
        return "too long"
    return None


async def harden(seed: QAPair, toolbox: Any, client: Any = None, *, hops: int = 2, rewriter: str = "llm",
                 max_description_words: int = 25, max_new_tokens: int = 160, temperature: float = 0.3,
                 entities_per_hop: int = 4, teacher: str = "") -> QAPair:
    """E2HQA: up to `hops` entity→description rewrites of the seed question; the answer never changes.
    Returns a QAPair with `difficulty` = hops done and every hop in `provenance["hops"]`."""
    question, answer = seed.question, seed.answer
    done_entities: list[str] = []
    records: list[dict] = []
    for hop in range(1, hops + 1):
        record = None
        hints = [h for h in seed.provenance.get("entities", []) if h in question and h not in done_entities]
        candidates = list(dict.fromkeys(hints + pick_entities(question, avoid=[answer, *done_entities])))
        for entity in candidates[:entities_per_hop]:
            entity, results = _resolve(entity, question, await search_results(toolbox, entity))
            if not results:
                continue
            rejected = []
            new_q, method = None, None
            if rewriter == "llm" and client is not None:
                try:
                    reply = await client.chat(rewrite_prompt(question, entity, results),
                                              temperature=temperature, max_new_tokens=max_new_tokens)
                    candidate = _clean(reply.text.strip().strip('"').splitlines()[0] if reply.text.strip() else "")
                except Exception as exc:
                    candidate = ""
                    rejected.append(f"llm request failed: {type(exc).__name__}")
                why = check_rewrite(candidate, question, entity, answer)
                if why is None:
                    new_q, method = candidate, "llm"
                elif candidate or not rejected:
                    rejected.append(f"llm: {why}")
            if new_q is None:  # template: a description from the top result's text (its page's first sentence)
                top = results[0]
                texts = [top["snippet"]]
                fetched = await toolbox.fetch(top["url"]) if hasattr(toolbox, "fetch") else None
                if fetched is not None and not getattr(fetched, "error", None) and getattr(fetched, "text", ""):
                    texts.insert(0, fetched.text)
                for text in texts:
                    desc = (describe(entity, text, max_description_words)
                            or describe(_title_name(top["title"]), text, max_description_words))
                    if desc is None:
                        continue
                    candidate = template_rewrite(question, entity, desc)
                    why = check_rewrite(candidate, question, entity, answer)
                    if why is None:
                        new_q, method = candidate, "template"
                        break
                    rejected.append(f"template: {why}")
            if new_q is None:
                continue
            record = {"hop": hop, "entity": entity, "query": entity, "method": method, "question": new_q,
                      "results": [{"title": r["title"], "url": r["url"]} for r in results[:3]],
                      "rejected": rejected}
            break
        if record is None:
            break  # no entity of the question could be found and rewritten: stop at the hops done
        records.append(record)
        done_entities.append(record["entity"])
        question = record["question"]
    evidence = list(dict.fromkeys(r["results"][0]["url"] for r in records))
    return QAPair(question=question, answer=answer, source="e2hqa", type="E2HQA", difficulty=len(records),
                  evidence_urls=evidence,
                  provenance={"seed": {"id": seed.id, "question": seed.question, "source": seed.source},
                              "hops": records, "rewriter": rewriter, "teacher": teacher})


def encyclopedia_seed(page: Page, max_words: int = 25) -> QAPair | None:
    """A simple seed question from an encyclopedia page: its lead sentence, subject masked, asking for the subject.
    "Alan Moore is an English author known for Watchmen." → "Who or what is an English author known for Watchmen?"
    """
    name = page.name.split(" - ")[0].split(" — ")[0].strip()
    if not name or not page.text:
        return None
    desc = describe(name, page.text, max_words)
    if desc is None:
        return None
    question = f"Who or what is {desc.rstrip('.')}?"
    # entities the page links to and the question names: the encyclopedia has a page for each, so E2HQA can
    # search and describe them (they are tried first)
    linked = sorted({a for a in page.anchors.values() if len(a) > 2 and a in question}, key=len, reverse=True)
    if leaks(name, question) or not linked:
        return None
    return QAPair(question=question, answer=name, source="encyclopedia", type="seed", evidence_urls=[page.url],
                  provenance={"generator": "template", "page": page.url, "entities": linked})


async def e2hqa(seeds: list[QAPair], toolbox: Any, cfg: Any, client: Any = None, *,
                progress: bool = True) -> tuple[list[QAPair], dict]:
    """Harden every seed (concurrently); keep those with at least `min_hops` hops. Returns (qa, report)."""
    e = cfg.synthesis.e2hqa
    semaphore = asyncio.Semaphore(cfg.models.teacher.concurrency)
    bar = tqdm(total=len(seeds), desc="e2hqa", unit="seed", disable=not progress)

    async def one(seed: QAPair) -> QAPair:
        async with semaphore:
            qa = await harden(seed, toolbox, client, hops=e.hops, rewriter=e.rewriter,
                              max_description_words=e.max_description_words, max_new_tokens=e.max_new_tokens,
                              teacher=cfg.models.teacher.name)
        bar.update(1)
        return qa

    hardened = await asyncio.gather(*(one(s) for s in seeds))
    bar.close()
    kept = dedupe(q for q in hardened if q.difficulty >= e.min_hops)
    methods = Counter(h["method"] for q in hardened for h in q.provenance["hops"])
    return kept, {"seeds": len(seeds), "kept": len(kept), "hops": dict(Counter(q.difficulty for q in hardened)),
                  "rewrites": dict(methods)}


def load_seeds(path: str | Path, n: int, seed: int = 0) -> list[QAPair]:
    """`n` seed QA pairs from a JSONL file of {question, answer} records (e.g. WebDancer's sample_qa.jsonl),
    sampled reproducibly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"E2HQA seed file not found: {path}")
    seeds = []
    for r in read_jsonl(path):
        answer = r.get("answer")
        while isinstance(answer, list) and answer:
            answer = answer[0]
        if r.get("question") and answer not in (None, "", []):
            seeds.append(QAPair(question=r["question"], answer=str(answer), source=f"seed:{path.stem}",
                                type="seed", provenance={"tag": r.get("tag")}))
    random.Random(seed).shuffle(seeds)
    return seeds[:n]


# ================================================================== split
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


# ================================================================== teacher trajectories
def _probe_id(qa: QAPair, sample: int, model: str) -> str:
    """The id `run_agent` gives sample `sample` of `qa` with this model (ids are content-derived)."""
    return Trajectory(question=qa.question, messages=[], qa_id=qa.id, sample=sample, model=model).id


async def sample_trajectories(qa: list[QAPair], client: Any, toolbox: Any, cfg: Any, path: str | Path, *,
                              judge_client: Any = None, progress: bool = True) -> list[Trajectory]:
    """Teacher trajectories with rejection sampling, resumable.

    Round k (k < `trajectories.samples_per_question`) runs sample k of every question that has no kept trajectory
    yet; each trajectory is appended to `path` the moment it finishes; then the filter funnel judges the round and
    the file is rewritten (atomically) with the verdicts. A re-run reads the file, skips every (question, sample)
    already there and filters only what has no verdict, so an interruption loses nothing that finished.
    Long CoT (`trajectories.cot: long`, a reasoning teacher) needs no change here: the agent turns the backend's
    reasoning_content into the <think> block. Returns every trajectory of these questions (kept and dropped).
    """
    from wdlib.agent import run_many
    from wdlib.filters import arun_funnel

    t = cfg.trajectories
    path = Path(path)
    model = getattr(client, "model_name", type(client).__name__)
    if t.cot == "long" and not cfg.models.teacher.reasoning:
        raise ValueError("trajectories.cot is 'long' but models.teacher.reasoning is false: long CoT needs a "
                         "reasoning teacher whose reasoning_content becomes the <think> block")
    wanted = {q.id for q in qa}
    on_disk = {tr.id: tr for tr in load_trajectories(path)}  # ours and, possibly, other runs' (kept as they are)
    agent_kwargs = dict(max_turns=t.max_turns, max_total_tokens=t.max_total_tokens,
                        context_length=cfg.models.teacher.context_length,
                        sampling={"temperature": t.temperature, "top_p": t.top_p})

    async def judge_pending() -> None:
        pending = [tr for tr in on_disk.values() if tr.qa_id in wanted and "kept" not in (tr.filters or {})]
        if pending:
            await arun_funnel(pending, cfg, judge_client, progress=False)
            write_jsonl(path, on_disk.values())

    await judge_pending()  # a previous run killed between a round and its funnel
    for k in range(t.samples_per_question):
        passed = {tr.qa_id for tr in on_disk.values() if (tr.filters or {}).get("kept")}
        todo = [q for q in qa if q.id not in passed]
        if not todo:
            break
        skip = set(on_disk) | {_probe_id(q, j, model) for q in todo for j in range(k)}

        def keep(tr: Trajectory) -> None:
            append_jsonl(path, [tr])
            on_disk[tr.id] = tr

        if progress:
            new = sum(_probe_id(q, k, model) not in skip for q in todo)
            print(f"round {k + 1}/{t.samples_per_question}: {len(todo)} questions without a kept trajectory, "
                  f"{new} samples to run ({len(todo) - new} already in {path.name})")
        await run_many(todo, client, toolbox, concurrency=t.concurrency, samples=k + 1, skip_ids=skip,
                       on_result=keep, progress=progress, **agent_kwargs)
        await judge_pending()
    return [tr for tr in on_disk.values() if tr.qa_id in wanted]


# ================================================================== stage wrappers (what notebook 01 calls)
async def crawl_site(cfg: Any, toolbox: Any, path: str | Path, *, progress: bool = True) -> list[Page]:
    """Crawl per `cfg.synthesis.crawlqa` into `path` (JSONL, one page per line); an existing complete crawl with
    the same settings is reused (a re-run costs nothing)."""
    c = cfg.synthesis.crawlqa
    path = Path(path)
    settings = {"roots": c.roots, "max_depth": c.max_depth, "max_pages": c.max_pages, "allow": c.allow,
                "deny": c.deny}
    stamp = path.with_suffix(".settings.json")
    if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return load_pages(path)
    result = await crawl(toolbox.fetch, c.roots, max_depth=c.max_depth, max_pages=c.max_pages, allow=c.allow,
                         deny=c.deny, concurrency=c.concurrency, delay_s=c.delay_s, progress=progress)
    write_jsonl(path, result.pages)
    stamp.write_text(json.dumps(settings))
    if not result.pages:
        raise RuntimeError(f"the crawl from {c.roots} kept no page; errors: {dict(list(result.errors.items())[:5])}")
    return result.pages


async def e2hqa_seeds(cfg: Any, toolbox: Any) -> list[QAPair]:
    """Seeds per `cfg.synthesis.e2hqa`: a QA file, else encyclopedia pages (crawled from `seed_roots`, or sampled
    from the local web's encyclopedia) turned into simple "who or what is <description>?" questions."""
    e = cfg.synthesis.e2hqa
    if e.seed_file:
        return load_seeds(cfg.resolve_path(e.seed_file), e.num_seeds, cfg.run.seed)
    if e.seed_roots:
        # list pages (e.g. Wikipedia's Vital articles) → their articles; pages without a defining sentence
        # (lists, portals) yield no seed and are skipped below
        pages = (await crawl(toolbox.fetch, e.seed_roots, max_depth=2, max_pages=4 * e.num_seeds + 8,
                             concurrency=cfg.synthesis.crawlqa.concurrency, delay_s=cfg.synthesis.crawlqa.delay_s,
                             progress=True)).pages
    else:
        if cfg.web.mode != "local":
            raise ValueError("synthesis.e2hqa: with web.mode live, give seed_file or seed_roots")
        from wdlib import web

        local = web.LocalWeb.load(cfg.web)
        urls = sorted(p.url for p in local.pages if p.site == web.ENCYCLOPEDIA)
        if not urls:
            raise ValueError("synthesis.e2hqa: no seed_file and the local web has no encyclopedia (add 'wikipedia' "
                             "to web.sites)")
        urls = random.Random(cfg.run.seed).sample(urls, min(len(urls), 4 * e.num_seeds + 4))
        pages = [page_from_fetch(f) for f in await asyncio.gather(*(toolbox.fetch(u) for u in urls))
                 if _unusable(f) is None]
    seeds = [s for s in (encyclopedia_seed(p, e.max_description_words) for p in pages) if s is not None]
    return dedupe(seeds)[:e.num_seeds]

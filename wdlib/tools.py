"""The agent's two tools, search and visit, and their schemas (the one place prompts and filters read them).

`Toolbox.from_config(cfg, summarizer=None)` is the environment the agent acts in:

    with Toolbox.from_config(cfg) as toolbox:          # local mode: starts the loopback web server
        obs = await toolbox.call("search", {"query": ["os.path.join"]})
        obs = await toolbox.visit("https://docs.python.org/3/library/os.path.html", goal="what join does")
        page = await toolbox.fetch(url)                 # FetchedPage, for crawlers

Outputs follow WebDancer's released trajectories exactly (search: `A Google search for '{q}' found N results:` …;
visit: `The useful information in {url} for user goal {goal} as follows:` …). `call` never raises: a failure is an
observation the agent can read. Search backends: `local` (bm25s over the local web, in process, the same index the
server's /search endpoint answers from) and `serpapi` (the official client; key from the environment; responses
cached on disk so re-runs cost no API calls). Visit fetches through the loopback mirror (local mode) or the live web
(timeout, size cap, content-type check, no file:// and no private/loopback addresses), extracts the main text
(trafilatura or newspaper3k), then picks goal-directed evidence with the summarizer model (JSON
{rational, evidence, summary}) or, without one or when it fails, extractively (BM25 over the page's passages).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

# Schemas in the shape WebDancer's prompt lists them (name, description, JSON-schema parameters).
TOOL_SCHEMAS: list[dict] = [
    {
        "name": "search",
        "description": "Performs batched web searches: supply an array 'query'; the tool retrieves the top 10 "
                       "results for each query in one call.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Array of query strings. Include multiple complementary search queries in a "
                                   "single call.",
                }
            },
            "required": ["query"],
        },
    },
    {
        "name": "visit",
        "description": "Visit webpage(s) and return the summary of the content.",
        "parameters": {
            "type": "object",
            "properties": {
                "url": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The URL(s) of the webpage(s) to visit. Can be a single URL or an array of URLs.",
                },
                "goal": {"type": "string", "description": "The specific information goal for visiting webpage(s)."},
            },
            "required": ["url", "goal"],
        },
    },
]
TOOL_NAMES = tuple(t["name"] for t in TOOL_SCHEMAS)
REQUIRED_ARGS = {t["name"]: tuple(t["parameters"]["required"]) for t in TOOL_SCHEMAS}

RESULT_SEPARATOR = "\n=======\n"  # between the queries of one search call, and the URLs of one visit call


# ---------------------------------------------------------------- search rendering
def render_search(query: str, results: list[dict]) -> str:
    """One query's results in WebDancer's shape (SerpAPI `organic_results` items: title, link, snippet, date?)."""
    if not results:
        return f"No results found for '{query}'. Try with a more general query."
    items = []
    for i, r in enumerate(results, 1):
        date = f"\nDate published: {r['date']}" if r.get("date") else ""
        snippet = f"\n{r['snippet']}" if r.get("snippet") else ""
        items.append(f"{i}. [{r.get('title', '')}]({r.get('link', '')}){date}\n{snippet}")
    return f"A Google search for '{query}' found {len(items)} results:\n\n## Web Results\n" + "\n\n".join(items)


def _observation(parts: list[str]) -> str:
    # The released trajectories end every observation with one newline before the agent's closing tag.
    return RESULT_SEPARATOR.join(p.strip() for p in parts) + "\n"


class SearchError(RuntimeError):
    pass


class LocalSearch:
    """bm25s over the local web, in process (sub-millisecond); the server's /search answers from the same index."""

    name = "local"

    def __init__(self, web, top_k: int = 10):
        self.web, self.top_k = web, top_k

    async def results(self, query: str) -> list[dict]:
        return self.web.search(query, k=self.top_k)


class SerpApiSearch:
    """Google results through SerpAPI's official client; each (engine, query, num) answer is cached on disk."""

    name = "serpapi"

    def __init__(self, cache_dir: Path, *, key_env: str = "SERPAPI_API_KEY", top_k: int = 10,
                 timeout_s: float = 20.0, base_domain: str | None = None):
        self.cache_dir, self.key_env, self.top_k, self.timeout_s = Path(cache_dir), key_env, top_k, timeout_s
        self.base_domain = base_domain  # tests point the real client at a loopback server with recorded JSON
        self.requests = 0  # API requests actually sent (cache misses)

    def _cache_path(self, params: dict) -> Path:
        key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _request(self, params: dict) -> dict:
        import serpapi

        key = os.environ.get(self.key_env)
        if not key:
            raise SearchError(f"search backend serpapi needs an API key in the environment variable {self.key_env}")
        client = serpapi.Client(api_key=key, timeout=self.timeout_s)
        if self.base_domain:
            client.BASE_DOMAIN = self.base_domain
        try:
            data = client.search(dict(params)).as_dict()
        except serpapi.HTTPError as exc:  # the message can carry the request URL (with the key): do not show it
            status = getattr(getattr(exc, "response", None), "status_code", None) or "error"
            raise SearchError(f"SerpAPI request failed (HTTP {status})") from None
        except serpapi.SerpApiError as exc:
            raise SearchError(f"SerpAPI request failed ({type(exc).__name__})") from None
        self.requests += 1
        return data

    async def raw(self, query: str) -> dict:
        params = {"engine": "google", "q": query, "num": self.top_k}
        path = self._cache_path(params)
        if path.is_file():
            return json.loads(path.read_text())
        data = await asyncio.to_thread(self._request, params)
        error = data.get("error")
        if error and "hasn't returned any results" not in error:
            raise SearchError(f"SerpAPI: {error}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False))
        tmp.replace(path)
        return data

    async def results(self, query: str) -> list[dict]:
        return serpapi_results(await self.raw(query))[: self.top_k]


def serpapi_results(data: dict) -> list[dict]:
    """SerpAPI Google JSON → result items (title, link, snippet, date), the shape `render_search` takes."""
    out = []
    for r in data.get("organic_results") or []:
        if not r.get("link"):
            continue
        out.append({"position": r.get("position", len(out) + 1), "title": r.get("title", ""), "link": r["link"],
                    "snippet": r.get("snippet", ""), **({"date": r["date"]} if r.get("date") else {})})
    return out


# ---------------------------------------------------------------- pages
@dataclass
class FetchedPage:
    url: str
    status: int = 0  # HTTP status; 0 when no request was made
    content_type: str = ""
    html: str = ""
    text: str = ""  # main text (the configured extractor)
    links: list[str] = field(default_factory=list)  # absolute URLs (local mode: canonical URLs of local pages)
    error: str | None = None  # why the page is not usable; None when it is
    truncated: bool = False  # cut at the size cap

    @property
    def ok(self) -> bool:
        return self.error is None


_TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
_UA = "Mozilla/5.0 (compatible; wdlib-webdancer/0.1; research agent)"


# trafilatura and newspaper3k are not thread-safe: they evaluate module-level lxml XPath objects, which lxml
# documents as unsafe to share between threads. Pages are parsed on worker threads (asyncio.to_thread), and two
# extractions at once corrupted the heap (seen here: "double free or corruption", about 1 run in 10 of a 60-page
# crawl). One extraction at a time; they hold the GIL for most of their work anyway.
_EXTRACT_LOCK = threading.Lock()


def extract_text(html: str, url: str | None = None, extractor: str = "trafilatura") -> str:
    """Main text of a page with trafilatura or newspaper3k; the plain visible text when the extractor finds none."""
    text = ""
    if html.strip():
        if extractor == "trafilatura":
            import trafilatura

            with _EXTRACT_LOCK:
                text = trafilatura.extract(html, url=url, include_comments=False, include_tables=True,
                                           favor_recall=True) or ""
        elif extractor == "newspaper":
            from newspaper import Article

            article = Article(url or "http://localhost/", language="en", fetch_images=False, memoize_articles=False)
            with _EXTRACT_LOCK:
                article.download(input_html=html)
                article.parse()
            text = article.text or ""
        else:
            raise ValueError(f"unknown extractor {extractor!r}; use 'trafilatura' or 'newspaper'")
    if len(text.strip()) < 40:  # short or empty: the extractors drop pages that look like navigation
        import lxml.html

        from .web import html_text

        try:
            fallback = html_text(lxml.html.fromstring(html))
        except Exception:  # not HTML at all
            fallback = ""
        text = fallback if len(fallback) > len(text) else text
    return text.strip()


async def _public_address(host: str) -> str | None:
    """None when every address of `host` is public; else why it may not be fetched (SSRF guard)."""
    try:
        infos = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            resolved = await asyncio.get_running_loop().getaddrinfo(host, None)
        except OSError as exc:
            return f"cannot resolve host {host}: {exc.strerror or exc}"
        infos = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in resolved]
    for ip in infos:
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast \
                or ip.is_unspecified:
            return f"{host} resolves to a private or loopback address ({ip}); only public web pages can be visited"
    return None


# ---------------------------------------------------------------- visit: evidence
# The extractor prompt of WebDancer's visit tool (its public inference code), asking for JSON
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


def render_visit(url: str, goal: str, evidence: str, summary: str) -> str:
    return (f"The useful information in {url} for user goal {goal} as follows: \n\n"
            f"Evidence in page: \n{evidence}\n\nSummary: \n{summary}")


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
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for match in re.finditer(r"\{", candidate):
            try:
                obj, _ = decoder.raw_decode(candidate, match.start())
            except json.JSONDecodeError:
                continue
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


def _bm25_scores(docs: list[str], query: str):
    import bm25s
    import Stemmer

    tokenizer = bm25s.tokenization.Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english").stemWord)
    ids = tokenizer.tokenize(docs, show_progress=False)
    query_ids = tokenizer.tokenize([query], update_vocab=False, show_progress=False)[0]
    retriever = bm25s.BM25()
    retriever.index(ids, show_progress=False)
    return retriever.get_scores(query_ids) if query_ids else [0.0] * len(docs)


def extractive_evidence(text: str, goal: str, budget_tokens: int = 400) -> tuple[str, str]:
    """(evidence, summary) without a model: the page's passages ranked against the goal with BM25, the best kept
    in page order within `budget_tokens` (≈0.75 words per token); the summary is the best two sentences."""
    from .web import passages

    budget_words = max(20, int(budget_tokens * 0.75))
    chunks = passages(text, max_words=max(20, min(80, budget_words // 3)))  # room for a few passages
    if not chunks:
        return "", ""
    scores = [float(s) for s in _bm25_scores(chunks, goal)]
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


def _listish(value: Any) -> Any:
    """A list argument the model wrote as a JSON string ('["a", "b"]') becomes the list it meant."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(parsed, list):
            return parsed
    return value


# ---------------------------------------------------------------- the toolbox
class Toolbox:
    """Search, visit and fetch over the configured web. A context manager: in local mode entering it loads the
    local web (built once, cached) and starts its loopback server; leaving stops the server."""

    def __init__(self, web_cfg, *, summarizer: Any = None, summarizer_chars: int | None = None,
                 summarizer_sampling: dict | None = None, search_backend: Any = None):
        self.cfg = web_cfg
        self.summarizer = summarizer  # any object with `async chat(messages, **sampling) -> reply` (reply.text)
        self.summarizer_chars = summarizer_chars or web_cfg.visit_max_page_chars
        self.summarizer_sampling = summarizer_sampling or {}
        self.web = None  # wdlib.web.LocalWeb, when the local web is used
        self.server = None  # wdlib.web.LocalWebServer, in local mode
        self._backend = search_backend
        self._ssl = None
        self._parsed: dict[str, tuple[str, list[str], str]] = {}  # local mode: url → (text, links, html)
        self._parsing: dict[tuple[int, str], asyncio.Future] = {}  # local mode: parses in flight, per event loop
        self.stats = {"search": 0, "visit": 0, "fetch": 0, "errors": 0, "summarizer_fallbacks": 0}

    @classmethod
    def from_config(cls, cfg, summarizer: Any = None) -> "Toolbox":
        """The toolbox for a Config (`cfg.web`). Visit's summarizer is `summarizer` if given, else a client for
        `cfg.models.summarizer` when one is configured; its page budget follows the model's context length."""
        chars = cfg.web.visit_max_page_chars
        spec = cfg.models.summarizer
        if summarizer is None and spec is not None:
            from .llm import make_client

            summarizer = make_client(spec, device=cfg.run.device)
        if summarizer is not None and spec is not None:
            # ~3 characters per token, leaving room for the prompt and the reply
            chars = min(chars, max(2000, (spec.context_length - spec.max_new_tokens - 400) * 3))
        return cls(cfg.web, summarizer=summarizer, summarizer_chars=chars)

    # -- lifecycle
    def open(self) -> "Toolbox":
        from . import web as localweb

        needs_web = self.cfg.mode == "local" or self.cfg.search_backend == "local"
        if needs_web and self.web is None:
            self.web = localweb.LocalWeb.load(self.cfg)
        if self.cfg.mode == "local" and self.server is None:
            self.server = localweb.LocalWebServer(self.web).start()
        if self._backend is None:
            if self.cfg.search_backend == "local":
                self._backend = LocalSearch(self.web, self.cfg.top_k)
            else:
                self._backend = SerpApiSearch(localweb.web_dir(self.cfg) / "search-cache" / "serpapi",
                                              key_env=self.cfg.serpapi_key_env, top_k=self.cfg.top_k,
                                              timeout_s=self.cfg.live_timeout_s)
        return self

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> "Toolbox":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "Toolbox":
        return self.open()

    async def __aexit__(self, *exc) -> None:
        self.close()

    def _ensure_open(self) -> None:
        if self._backend is None or (self.cfg.mode == "local" and self.server is None):
            self.open()

    # -- the agent's entry point
    async def call(self, name: str, arguments: Any) -> str:
        """Run a tool call; never raises (bad arguments, unknown tools and failures come back as observations).
        Every observation ends with one newline, as in WebDancer's released trajectories."""
        return (await self._call(name, arguments)).rstrip() + "\n"

    async def _call(self, name: str, arguments: Any) -> str:
        try:
            if self.cfg.tool_latency_s:
                await asyncio.sleep(self.cfg.tool_latency_s)
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except json.JSONDecodeError as exc:
                    return f"Error: the arguments of {name} are not valid JSON ({exc.msg})."
            if name not in TOOL_NAMES:
                return f"Error: unknown tool '{name}'. Available tools: {', '.join(TOOL_NAMES)}."
            if not isinstance(arguments, dict):
                return f"Error: the arguments of {name} must be a JSON object, got {type(arguments).__name__}."
            missing = [a for a in REQUIRED_ARGS[name] if arguments.get(a) in (None, "", [])]
            if missing:
                return f"Error: {name} needs the argument(s) {', '.join(repr(m) for m in missing)}."
            if name == "search":
                return await self.search(_listish(arguments["query"]))
            return await self.visit(_listish(arguments["url"]), arguments["goal"])
        except Exception as exc:  # a tool failure is something the agent observes, never a crash of the rollout
            self.stats["errors"] += 1
            return f"Error: {name} failed: {type(exc).__name__}: {exc}"

    # -- search
    async def search(self, query: str | list[str]) -> str:
        self._ensure_open()
        queries = [query] if isinstance(query, str) else [str(q) for q in query]
        queries = [q.strip() for q in queries if str(q).strip()][: self.cfg.max_queries_per_call]
        if not queries:
            return "Error: search needs at least one non-empty query.\n"
        self.stats["search"] += 1

        async def one(q: str) -> str:
            try:
                return render_search(q, await self._backend.results(q))
            except SearchError as exc:
                return f"Search for '{q}' failed: {exc}"

        return _observation(list(await asyncio.gather(*(one(q) for q in queries))))

    async def search_results(self, query: str) -> list[dict]:
        """Structured results of one query (title, link, snippet), for data synthesis."""
        self._ensure_open()
        return await self._backend.results(query)

    # -- fetch
    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def fetch(self, url: str) -> FetchedPage:
        """GET a page (local mirror or live web) with its main text and links; never raises."""
        self._ensure_open()
        self.stats["fetch"] += 1
        url = (url or "").strip()
        try:
            if self.cfg.mode == "local":
                return await self._fetch_local(url)
            return await self._fetch_live(url)
        except Exception as exc:
            return FetchedPage(url=url, error=f"{type(exc).__name__}: {exc}")

    async def _fetch_local(self, url: str) -> FetchedPage:
        import httpx

        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            return FetchedPage(url=url, error=f"only http(s) URLs can be visited, not {scheme or 'this'!r}")
        if not self.web.knows_host(url):
            hosts = ", ".join(sorted(self.web.hosts))
            return FetchedPage(url=url, error=f"{url} is not in the local web (this offline web mirrors {hosts}); "
                                              f"search first and visit a URL from the results")
        mirror = self.server.mirror_url(url)
        async with httpx.AsyncClient(timeout=self.cfg.live_timeout_s, trust_env=False) as client:
            r = await client.get(mirror)
        content_type = r.headers.get("content-type", "")
        if r.status_code != 200:
            return FetchedPage(url=url, status=r.status_code, content_type=content_type,
                               error=f"HTTP {r.status_code}: {url} is not in the local web (no such page)")
        canonical = r.headers.get("x-canonical-url", url)
        return await self._page(canonical, r.status_code, content_type, r.text,
                                base=r.headers.get("content-location", canonical))

    async def _fetch_live(self, url: str) -> FetchedPage:
        import httpx

        max_bytes = self.cfg.live_max_bytes
        async with httpx.AsyncClient(timeout=self.cfg.live_timeout_s, verify=self._ssl_context(),
                                     headers={"User-Agent": _UA}) as client:
            for _ in range(6):  # follow redirects ourselves: every hop passes the same checks
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https"):
                    return FetchedPage(url=url, error=f"only http(s) URLs can be visited, not {parts.scheme!r}")
                if not parts.hostname:
                    return FetchedPage(url=url, error="the URL has no host")
                if not self.cfg.live_allow_private:
                    why = await _public_address(parts.hostname)
                    if why:
                        return FetchedPage(url=url, error=why)
                async with client.stream("GET", url) as r:
                    if r.is_redirect and r.headers.get("location"):
                        url = urljoin(url, r.headers["location"])
                        continue
                    content_type = r.headers.get("content-type", "")
                    if r.status_code != 200:
                        return FetchedPage(url=url, status=r.status_code, content_type=content_type,
                                           error=f"HTTP {r.status_code} for {url}")
                    if content_type.split(";")[0].strip().lower() not in _TEXT_TYPES:
                        return FetchedPage(url=url, status=r.status_code, content_type=content_type,
                                           error=f"unsupported content type {content_type or 'unknown'!r} "
                                                 f"(only HTML and plain text pages can be read)")
                    body, truncated = bytearray(), False
                    async for chunk in r.aiter_bytes():
                        body.extend(chunk)
                        if len(body) >= max_bytes:  # the size cap: keep the head, stop downloading
                            del body[max_bytes:]
                            truncated = True
                            break
                    charset = r.charset_encoding or "utf-8"
                    try:
                        html = body.decode(charset, errors="replace")
                    except LookupError:
                        html = body.decode("utf-8", errors="replace")
                    page = await self._page(url, r.status_code, content_type, html, base=url)
                    page.truncated = truncated
                    return page
            return FetchedPage(url=url, error="too many redirects")

    async def _page(self, url: str, status: int, content_type: str, html: str, base: str) -> FetchedPage:
        from .web import html_links

        def parse() -> tuple[str, list[str], str]:
            import lxml.html

            if content_type.startswith("text/plain"):
                return html, [], html
            text = extract_text(html, url, self.cfg.extractor)
            try:
                root = lxml.html.fromstring(html)
            except Exception:  # not parseable: text only
                return text, [], html
            links = html_links(root, base)
            body = html
            if base != url:  # links are written relative to another address (pretty URLs): make them absolute
                root.make_links_absolute(base)
                body = lxml.html.tostring(root, encoding="unicode")
            return text, links, body

        # Local pages never change: remember their parse (trafilatura takes ~1 s on the largest doc pages, and
        # rollouts visit the same pages again and again), and parse a page once even when a group's rollouts visit
        # it at the same moment (they then share the one parse in flight instead of each parsing it on a thread).
        if self.cfg.mode != "local":
            cached = await asyncio.to_thread(parse)
        elif (cached := self._parsed.get(url)) is None:
            key = (id(asyncio.get_running_loop()), url)
            pending = self._parsing.get(key)
            if pending is None:
                pending = self._parsing[key] = asyncio.ensure_future(asyncio.to_thread(parse))
                pending.add_done_callback(lambda _: self._parsing.pop(key, None))
            cached = await asyncio.shield(pending)
            self._parsed[url] = cached
            while len(self._parsed) > 256:
                self._parsed.pop(next(iter(self._parsed)))
        text, links, body = cached
        if self.web is not None and self.cfg.mode == "local":
            links = list(dict.fromkeys((p.url if (p := self.web.lookup(u)) else u) for u in links))
        return FetchedPage(url=url, status=status, content_type=content_type, html=body, text=text, links=links)

    # -- visit
    async def visit(self, url: str | list[str], goal: str) -> str:
        self._ensure_open()
        urls = [url] if isinstance(url, str) else [str(u) for u in url]
        urls = [u.strip() for u in urls if str(u).strip()][: self.cfg.visit_max_urls]
        if not urls:
            return "Error: visit needs at least one URL.\n"
        goal = str(goal).strip()
        self.stats["visit"] += 1
        return _observation(list(await asyncio.gather(*(self._visit_one(u, goal) for u in urls))))

    async def _visit_one(self, url: str, goal: str) -> str:
        page = await self.fetch(url)
        if page.error or not page.text.strip():
            reason = page.error or "the page has no readable text"
            return render_visit(url, goal, f"{NO_CONTENT_EVIDENCE} ({reason})", NO_CONTENT_SUMMARY)
        evidence = await self._llm_evidence(page.text, goal) if self.summarizer is not None else None
        if evidence is None:
            ev, summary = await asyncio.to_thread(extractive_evidence, page.text, goal, self.cfg.visit_evidence_tokens)
            evidence = {"evidence": ev, "summary": summary}
        return render_visit(url, goal, evidence["evidence"] or "(none)", evidence["summary"] or "(none)")

    async def _llm_evidence(self, text: str, goal: str) -> dict | None:
        """The summarizer's JSON; on an unusable reply or an error, again with a shorter page; None → extractive."""
        chars = self.summarizer_chars
        for attempt in range(3):
            prompt = EXTRACTOR_PROMPT.format(webpage_content=text[:chars], goal=goal)
            try:
                reply = await self.summarizer.chat([{"role": "user", "content": prompt}], **self.summarizer_sampling)
                parsed = parse_evidence_json(getattr(reply, "text", reply) or "")
            except Exception:  # a model/endpoint failure (context overflow, timeout): retry shorter, then fall back
                parsed = None
            if parsed is not None:
                return parsed
            if chars >= len(text) and attempt:
                break
            chars = max(1000, min(chars, len(text)) // 2)
        self.stats["summarizer_fallbacks"] += 1
        return None

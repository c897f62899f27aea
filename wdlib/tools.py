"""The agent's two tools, search and visit, over the configured web: the environment the agent acts in.

`Toolbox.from_config(cfg, summarizer=None)`:

    with Toolbox.from_config(cfg) as toolbox:          # local mode: starts the loopback web server
        obs = await toolbox.call("search", {"query": ["os.path.join"]})
        obs = await toolbox.visit("https://docs.python.org/3/library/os.path.html", goal="what join does")
        page = await toolbox.fetch(url)                 # FetchedPage, for crawlers

Outputs follow WebDancer's released trajectories exactly (`wdlib.react.render_search` / `render_visit`). `call`
never raises: a failure is an observation the agent can read. Search backends (`wdlib.search`): `local` (bm25s over
the local web, in process, the same index the server's /search endpoint answers from) and `serpapi`. Visit fetches
through the loopback mirror (local mode) or the live web (one deadline and one size budget per visit, gzip/deflate
decoded within it, content-type check, no file:// and only public addresses: `wdlib.netguard`), extracts the main
text (trafilatura or newspaper3k, in worker processes: `wdlib.extract`; a PDF's text with pypdf, within the same byte
cap and time limit), then picks goal-directed evidence (`wdlib.evidence`) with the summarizer model, or, without one
or when it fails, extractively. With `web.snapshot`, live mode records every fetch, search and summarizer call into a
WARC snapshot and `web.mode: replay` serves them from it, no network, no keys (`wdlib.snapshot`).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urljoin, urlsplit

from wdlib import extract
from wdlib.config import Config, WebParams
from wdlib.evidence import (EXTRACTOR_PROMPT, NO_CONTENT_EVIDENCE, NO_CONTENT_SUMMARY, extractive_evidence,
                            parse_evidence_json)
from wdlib.netguard import ACCEPT_ENCODING, BoundedDecoder, LiveTransport, check_host
from wdlib.pdf import PDF_TYPES, is_pdf, pdf_text
from wdlib.react import REQUIRED_ARGS, TOOL_NAMES, loads_json, observation, render_search, render_visit
from wdlib.search import LocalSearch, SearchError, SerpApiSearch
from wdlib.sites import url_key, web_dir
from wdlib.web import LocalWeb
from wdlib.webserver import LocalWebServer

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
_BINARY_TYPES = ("application/octet-stream", "binary/octet-stream")  # read only when the body is a PDF (%PDF-)


@dataclass
class _Body:
    """A live page as it arrives (what a deadline leaves is still a page)."""

    url: str
    status: int | None = None  # None until the final hop answered
    content_type: str = ""
    charset: str = "utf-8"
    body: bytearray = field(default_factory=bytearray)
    truncated: bool = False


DEADLINE_SLACK_S = 0.5  # past httpx's per-read timeout: a plain stall still reads as its ReadTimeout
_UA = "Mozilla/5.0 (compatible; wdlib-webdancer/0.1; research agent)"


async def _pdf_page(url: str, status: int, content_type: str, body: bytes, *, truncated: bool, max_chars: int,
                    timeout_s: float) -> FetchedPage:
    """A fetched PDF as a page of text, within visit's limits: the bytes cap (a cut PDF usually cannot be read: its
    index is at the end) and the time limit for extraction."""
    import pypdf  # noqa: F401  (imported before the clock starts: the first import alone can take a second)

    try:
        text = await asyncio.wait_for(asyncio.to_thread(pdf_text, body, max_chars), timeout=timeout_s)
    except asyncio.TimeoutError:
        return FetchedPage(url=url, status=status, content_type=content_type, truncated=truncated,
                           error=f"the PDF's text could not be extracted within {timeout_s:.0f} s")
    except Exception as exc:
        why = (f"the PDF is larger than the {len(body):,}-byte limit and cannot be read in part" if truncated
               else f"the PDF could not be read ({type(exc).__name__}: {exc})")
        return FetchedPage(url=url, status=status, content_type=content_type, truncated=truncated, error=why)
    return FetchedPage(url=url, status=status, content_type=content_type, text=text, truncated=truncated)


def _listish(value: Any) -> Any:
    """A list argument the model wrote as a JSON string ('["a", "b"]') becomes the list it meant."""
    if isinstance(value, str) and value.strip().startswith("["):
        parsed, _ = loads_json(value)
        if isinstance(parsed, list):
            return parsed
    return value


# ---------------------------------------------------------------- the toolbox
class Toolbox:
    """Search, visit and fetch over the configured web. A context manager: in local mode entering it loads the
    local web (built once, cached) and starts its loopback server; leaving stops the server."""

    def __init__(self, web_cfg: WebParams, *, summarizer: Any = None, summarizer_chars: int | None = None,
                 summarizer_sampling: dict | None = None, search_backend: Any = None):
        self.cfg = web_cfg
        self.summarizer = summarizer  # any object with `async chat(messages, **sampling) -> reply` (reply.text)
        self.summarizer_chars = summarizer_chars or web_cfg.visit_max_page_chars
        self.summarizer_sampling = summarizer_sampling or {}
        self.web = None  # wdlib.web.LocalWeb, when the local web is used
        self.server = None  # wdlib.webserver.LocalWebServer, in local mode
        self._backend = search_backend
        self._ssl = None
        self._parsed: dict[str, tuple[str, list[str], str]] = {}  # local mode: canonical url → (text, links, html)
        self._parsing: dict[tuple[int, str], asyncio.Future] = {}  # local mode: parses in flight, per event loop
        self._pages: dict[str, FetchedPage] = {}  # local mode: requested url → the page fetched
        self._pool = None  # wdlib.extract.ParsePool, started on first use
        self._pool_lock = threading.Lock()
        self.stats = {"search": 0, "visit": 0, "fetch": 0, "errors": 0, "summarizer_fallbacks": 0}
        self.snapshot = None  # wdlib.snapshot.store.Snapshot: live mode records into it, replay mode serves from it
        self.summarizer_spec = None  # the summarizer's ModelSpec, when known: its cache key in a snapshot

    @classmethod
    def from_config(cls, cfg: Config, summarizer: Any = None) -> "Toolbox":
        """The toolbox for a Config (`cfg.web`). Visit's summarizer is `summarizer` if given, else a client for
        `cfg.models.summarizer` when one is configured; its page budget follows the model's context length."""
        chars = cfg.web.visit_max_page_chars
        spec = cfg.models.summarizer
        if summarizer is None and spec is not None:
            from wdlib.llm import Reply, make_client
            from wdlib.snapshot.replay import SnapshotLLM

            # replay serves the summarizer's replies from the snapshot: no model, endpoint or key is needed
            summarizer = SnapshotLLM(None, None, backend=spec.backend, model=spec.name, reply_type=Reply) \
                if cfg.web.mode == "replay" else make_client(spec, device=cfg.run.device)
        if summarizer is not None and spec is not None:
            # ~3 characters per token, leaving room for the prompt and the reply
            chars = min(chars, max(2000, (spec.context_length - spec.max_new_tokens - 400) * 3))
        toolbox = cls(cfg.web, summarizer=summarizer, summarizer_chars=chars)
        toolbox.summarizer_spec = spec
        return toolbox

    # -- lifecycle
    def open(self) -> "Toolbox":
        needs_web = self.cfg.mode == "local" or (self.cfg.search_backend == "local" and self.cfg.mode != "replay")
        if needs_web and self.web is None:
            self.web = LocalWeb.load(self.cfg)
        if self.cfg.mode == "local" and self.server is None:
            self.server = LocalWebServer(self.web).start()
        if self._backend is None:
            if self.cfg.search_backend == "local":
                self._backend = LocalSearch(self.web, self.cfg.top_k)
            else:
                self._backend = SerpApiSearch(web_dir(self.cfg) / "search-cache" / "serpapi",
                                              key_env=self.cfg.serpapi_key_env, top_k=self.cfg.top_k,
                                              timeout_s=self.cfg.live_timeout_s)
        if self.snapshot is None and (self.cfg.snapshot or self.cfg.mode == "replay"):
            self._attach_snapshot()
        return self

    def _attach_snapshot(self) -> None:
        """Open `web.snapshot` (record in live mode, replay in replay mode); search and the summarizer go through it."""
        from wdlib.llm import Reply
        from wdlib.snapshot.replay import SnapshotLLM, SnapshotSearch, open_snapshot

        spec, summarizer = self.summarizer_spec, self.summarizer
        client = summarizer.inner if isinstance(summarizer, SnapshotLLM) else summarizer
        name = f"{spec.backend}:{spec.name}" if spec is not None else \
            None if client is None else getattr(client, "model_name", type(client).__name__)
        self.snapshot = open_snapshot(self.cfg, stats=self.stats, summarizer=name, url_key=url_key)
        self._backend = SnapshotSearch(self.snapshot, self._backend, self.cfg.search_backend, self.cfg.top_k,
                                       open_index=LocalWeb.from_folder)
        if summarizer is not None:
            self.summarizer = SnapshotLLM.wrap(self.snapshot, client, Reply, spec)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.snapshot is not None:
            self.snapshot.close()  # record mode: the session goes into the manifest
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _parse_pool(self):
        """Page-parsing worker processes (`web.extract_workers`, default: the CPU cores), started on first use."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = extract.ParsePool(self.cfg.extract_workers, self.cfg.extract_timeout_s)
            return self._pool

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
                arguments, why = loads_json(arguments)
                if why:
                    return f"Error: the arguments of {name} are not valid JSON ({why})."
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

        return observation(list(await asyncio.gather(*(one(q) for q in queries))))

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
        if (page := self._pages.get(url)) is not None:  # local pages never change: no second request for a page
            return replace(page, links=list(page.links))
        mirror = self.server.mirror_url(url)
        # verify= the cached context: httpx builds (and loads the CA bundle into) a new one per client otherwise,
        # ~30-70 ms per visit, for a loopback http request that never uses TLS
        async with httpx.AsyncClient(timeout=self.cfg.live_timeout_s, trust_env=False,
                                     verify=self._ssl_context()) as client:
            r = await client.get(mirror)
        content_type = r.headers.get("content-type", "")
        if r.status_code != 200:
            return FetchedPage(url=url, status=r.status_code, content_type=content_type,
                               error=f"HTTP {r.status_code}: {url} is not in the local web (no such page)")
        canonical = r.headers.get("x-canonical-url", url)
        if is_pdf(content_type, r.content):
            page = await _pdf_page(canonical, r.status_code, content_type, r.content, truncated=False,
                                   max_chars=self.cfg.visit_max_page_chars, timeout_s=self.cfg.live_timeout_s)
        else:
            page = await self._page(canonical, r.status_code, content_type, r.text,
                                    base=r.headers.get("content-location", canonical))
        if page.ok:
            self._pages[url] = page
            while len(self._pages) > 256:
                self._pages.pop(next(iter(self._pages)))
        return replace(page, links=list(page.links))

    async def _fetch_live(self, url: str) -> FetchedPage:
        """GET a live page within one budget: at most `live_max_bytes` read and decoded, all hops within
        `live_timeout_s` (+ DEADLINE_SLACK_S); every hop's address public (`wdlib.netguard`). A deadline that passes
        while the body streams in keeps what arrived (a truncated page, like the size cap); before an answer, it is an
        error."""
        import httpx

        transport = LiveTransport(self._ssl_context(), self.cfg.live_allow_private)
        if self.snapshot is not None:  # served from (and, recording, written to) the snapshot
            from wdlib.snapshot.replay import SnapshotTransport

            transport = SnapshotTransport(self.snapshot, live=transport, max_bytes=self.cfg.live_max_bytes)
        got = _Body(url)
        try:  # the deadline: just past httpx's own per-read timeout, so a plain stall still reads as a ReadTimeout
            async with asyncio.timeout(self.cfg.live_timeout_s + DEADLINE_SLACK_S):
                async with httpx.AsyncClient(timeout=self.cfg.live_timeout_s, transport=transport, trust_env=False,
                                             headers={"User-Agent": _UA, "Accept-Encoding": ACCEPT_ENCODING}) as client:
                    failed = await self._get_live(client, got)
        except TimeoutError:
            if got.status is None:
                why = f"no answer from {got.url} within {self.cfg.live_timeout_s + DEADLINE_SLACK_S:g} s"
                if self.snapshot is not None and self.snapshot.mode == "record":
                    self.snapshot.record_error(got.url, "TimeoutError", why)  # replays as the same timeout
                return FetchedPage(url=got.url, error=f"TimeoutError: {why}")
            failed, got.truncated = None, True
        if failed is not None:
            return failed
        if is_pdf(got.content_type, bytes(got.body[:5])):  # extracted after the fetch, within its own time limit
            return await _pdf_page(got.url, got.status, got.content_type, bytes(got.body), truncated=got.truncated,
                                   max_chars=self.cfg.visit_max_page_chars, timeout_s=self.cfg.live_timeout_s)
        if got.content_type.split(";")[0].strip().lower() in _BINARY_TYPES:
            return FetchedPage(url=got.url, status=got.status, content_type=got.content_type,
                               error="a binary file that is not a PDF cannot be read")
        try:
            html = got.body.decode(got.charset, errors="replace")
        except LookupError:
            html = got.body.decode("utf-8", errors="replace")
        page = await self._page(got.url, got.status, got.content_type, html, base=got.url)
        page.truncated = got.truncated
        return page

    async def _get_live(self, client, got: "_Body") -> FetchedPage | None:
        """Follow `got.url` (redirects by hand: each hop passes the same checks) and stream the body into `got`;
        a FetchedPage when the page cannot be read, None when `got` holds it."""
        max_bytes, url = self.cfg.live_max_bytes, got.url
        for _ in range(6):
            got.url = url
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                return FetchedPage(url=url, error=f"only http(s) URLs can be visited, not {parts.scheme!r}")
            if not parts.hostname:
                return FetchedPage(url=url, error="the URL has no host")
            if not self.cfg.live_allow_private:  # early and by name; the connection itself is checked again
                why = await (self.snapshot.check_address(url, check_host) if self.snapshot is not None
                             else check_host(parts.hostname))
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
                if content_type.split(";")[0].strip().lower() not in _TEXT_TYPES + PDF_TYPES + _BINARY_TYPES:
                    return FetchedPage(url=url, status=r.status_code, content_type=content_type,
                                       error=f"unsupported content type {content_type or 'unknown'!r} "
                                             f"(only HTML, plain text and PDF can be read)")
                decoder = BoundedDecoder(r.headers.get("content-encoding"))
                got.status, got.content_type, got.charset = r.status_code, content_type, r.charset_encoding or "utf-8"
                raw = 0
                async for chunk in r.aiter_raw():  # still encoded: decoded here, within the budget
                    chunk = chunk[:max_bytes - raw]
                    raw += len(chunk)
                    got.body += decoder.feed(chunk, max_bytes - len(got.body))
                    if len(got.body) >= max_bytes or raw >= max_bytes:  # the size cap: keep the head, stop reading
                        got.truncated = True
                        break
                return None
        return FetchedPage(url=url, error="too many redirects")

    async def _page(self, url: str, status: int, content_type: str, html: str, base: str) -> FetchedPage:
        def parse() -> tuple[str, list[str], str]:
            args = (html, url, base, content_type, self.cfg.extractor)
            if self.cfg.extract_workers == 0:  # in this process, one at a time (extract_text's lock)
                return extract.parse_page(*args)
            # a worker process; a crash or hang there is a ParseError
            return self._parse_pool().run(extract.parse_page, *args)

        # Local pages never change: remember their parse (trafilatura takes ~1 s on the largest doc pages, and
        # rollouts visit the same pages again and again), and parse a page once even when a group's rollouts visit
        # it at the same moment (they then share the one parse in flight instead of each parsing it).
        try:
            if self.cfg.mode != "local":
                # a snapshot holds the text and links extracted at recording (conversion records): replay reads them
                cached = self.snapshot.parsed(url, self.cfg.extractor, html) if self.snapshot is not None else None
                if cached is None:
                    cached = await asyncio.to_thread(parse)
                    if self.snapshot is not None and self.snapshot.mode == "record":
                        self.snapshot.record_parsed(url, self.cfg.extractor, html, cached[0], cached[1])
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
        except extract.ParseError as exc:
            return FetchedPage(url=url, status=status, content_type=content_type, error=str(exc))
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
        return observation(list(await asyncio.gather(*(self._visit_one(u, goal) for u in urls))))

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

"""What the tools plug in to record into or replay from a snapshot (`wdlib.snapshot.store`).

- `SnapshotTransport`: an httpx transport. Every request the visit tool makes (each redirect hop on its own) is
  served from the snapshot when it holds the URL; otherwise, recording, it goes to the live web and the exchange is
  written to the WARC file as the body streams through (exactly the bytes read, Content-Encoding kept, cut where the
  tool stopped reading) or, on failure, the failure is; replaying, it is a miss (`NotInSnapshot`).
- `SnapshotSearch`, `SnapshotLLM`: the same for search answers and the summarizer's (or any tool LLM's) replies,
  in the content-addressed cache.
- `open_snapshot`: `web.snapshot` opened for `web.mode` (live records, replay serves), with clear errors for
  settings that cannot work. `wdlib.tools.Toolbox` routes its fetches, search backend and summarizer through these.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import Any, Callable

import httpx

from wdlib.config import REPO_ROOT, WebParams
from wdlib.search import SearchError, serpapi_results
from wdlib.snapshot.store import Snapshot, SnapshotError, redact_url


def _rebuild_error(name: str, message: str, request: httpx.Request) -> Exception:
    """The recorded failure again: same type name and message, so the observation reads the same."""
    cls = getattr(httpx, name, None)
    if isinstance(cls, type) and issubclass(cls, httpx.RequestError):
        return cls(message, request=request)
    return type(name, (Exception,), {})(message)


class _Tee(httpx.AsyncByteStream):
    """Passes the live body through and writes the exchange when the response is closed."""

    def __init__(self, snap: Snapshot, request: httpx.Request, response: httpx.Response):
        self.snap, self.request, self.response = snap, request, response
        self.chunks: list[bytes] = []
        self.done, self.error, self.saved = False, None, False

    async def __aiter__(self):
        try:
            async for chunk in self.response.stream:
                self.chunks.append(chunk)
                yield chunk
        except Exception as exc:
            self.error = exc
            raise
        self.done = True

    async def aclose(self) -> None:
        try:
            await self.response.aclose()
        finally:
            self._save()

    def _save(self) -> None:
        if self.saved:
            return
        self.saved = True
        r, body = self.response, b"".join(self.chunks)
        truncated = None
        if self.error is not None:
            truncated = "disconnect"
        elif not self.done and r.headers.get("content-length") != "0":
            truncated = "length"  # the tool stopped reading (size cap, a redirect or a type it does not read)
        decode = lambda pairs: [(k.decode("latin-1"), v.decode("latin-1")) for k, v in pairs]  # noqa: E731
        self.snap.record_exchange(
            self.request.method, str(self.request.url), decode(self.request.headers.raw), r.status_code,
            r.extensions.get("reason_phrase", b"").decode("latin-1"), decode(r.headers.raw), body,
            truncated=truncated, error=f"{type(self.error).__name__}: {self.error}" if self.error else None)


class _Replayed(httpx.AsyncByteStream):
    def __init__(self, body: bytes, error: Exception | None):
        self.body, self.error = body, error

    async def __aiter__(self):
        if self.body:
            yield self.body
        if self.error is not None:
            raise self.error


class SnapshotTransport(httpx.AsyncBaseTransport):
    """Serves requests from the snapshot; recording, fetches what it lacks (HTTP(S)_PROXY / NO_PROXY honoured)."""

    def __init__(self, snap: Snapshot, verify: Any = True):
        self.snap, self.verify = snap, verify
        self._live: dict[str | None, httpx.AsyncHTTPTransport] = {}

    def _live_transport(self, request: httpx.Request) -> httpx.AsyncHTTPTransport:
        proxies = urllib.request.getproxies()
        proxy = proxies.get(request.url.scheme) or proxies.get("all")
        if proxy and urllib.request.proxy_bypass(request.url.host):
            proxy = None
        if proxy not in self._live:
            self._live[proxy] = httpx.AsyncHTTPTransport(verify=self.verify, proxy=proxy)
        return self._live[proxy]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        entry = self.snap.fetch_entry(url)
        if entry is not None:
            self.snap.hit()
            return self._replay(entry, request)
        if self.snap.mode == "replay":
            raise self.snap.miss(redact_url(url))
        try:
            response = await self._live_transport(request).handle_async_request(request)
        except Exception as exc:
            self.snap.record_error(url, type(exc).__name__, str(exc))
            raise
        return httpx.Response(response.status_code, headers=response.headers, extensions=response.extensions,
                              stream=_Tee(self.snap, request, response), request=request)

    def _replay(self, entry, request: httpx.Request) -> httpx.Response:
        info = entry.info
        if info["type"] == "error":
            raise _rebuild_error(info["error_type"], info["message"], request)
        status, reason, headers, body = self.snap.read_response(entry)
        error = None
        if info.get("stream_error"):
            name, _, message = info["stream_error"].partition(": ")
            error = _rebuild_error(name, message, request)
        raw = [(k.encode("latin-1", "replace"), v.encode("latin-1", "replace")) for k, v in headers]
        return httpx.Response(status, headers=raw, stream=_Replayed(body, error), request=request,
                              extensions={"reason_phrase": reason.encode("latin-1", "replace"),
                                          "http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        for transport in self._live.values():
            await transport.aclose()


class SnapshotSearch:
    """A search backend answering from the snapshot's cache; recording, asks `inner` for what it lacks. In replay an
    exported local web answers any query from its own index (`search/`, opened with `open_index`, e.g.
    `wdlib.web.LocalWeb.from_folder`); a recorded run only the queries it recorded."""

    def __init__(self, snap: Snapshot, inner: Any, backend: str, top_k: int,
                 open_index: Callable[[Path], Any] | None = None):
        self.snap, self.inner, self.name, self.top_k = snap, inner, backend, top_k
        self._open_index, self._index = open_index, None
        if snap.mode == "record" and getattr(inner, "name", "") == "serpapi" and not os.environ.get(inner.key_env):
            # a missing key would be recorded as every search's answer
            raise SnapshotError(f"recording with search_backend: serpapi needs the API key in {inner.key_env}")

    def search_index(self):
        """The exported local web's own search (a LocalWeb), or None (a recorded run answers recorded queries)."""
        folder = self.snap.path / "search"
        if self._index is None and self._open_index is not None and (folder / "index" / "meta.json").is_file():
            self._index = self._open_index(folder)
        return self._index

    async def results(self, query: str) -> list[dict]:
        key = {"backend": self.name, "q": query, "num": self.top_k}
        hit = self.snap.cache_get("search", key)
        if hit is not None:
            self.snap.hit()
            if "error" in hit:
                raise SearchError(hit["error"])
            return hit["results"]
        if self.snap.mode == "replay":
            web = self.search_index()
            if web is None:
                raise SearchError(str(self.snap.miss(f"the search {query!r}")))
            self.snap.hit()
            return web.search(query, k=self.top_k)
        raw, value = None, {}
        try:
            if hasattr(self.inner, "raw"):  # SerpAPI: keep its whole answer (api_key scrubbed), serve the results
                raw = await self.inner.raw(query)
                results = serpapi_results(raw)[: self.top_k]
                value["request_url"] = "https://serpapi.com/search.json?" + str(httpx.QueryParams(
                    {"engine": "google", "q": query, "num": self.top_k}))
            else:
                results = await self.inner.results(query)
        except SearchError as exc:
            self.snap.cache_put("search", key, {"error": str(exc)})
            raise
        self.snap.cache_put("search", key, {"results": results, **value, **({"raw": raw} if raw else {})})
        return results


class SnapshotLLM:
    """A chat client served from the snapshot's cache (key: backend, model, messages, sampling); recording, asks
    `inner` for what it lacks. Replaying needs no model, endpoint or key: `inner` may be None. Replies come back as
    `reply_type` (`wdlib.llm.Reply`, the clients' own type)."""

    token_level = False

    def __init__(self, snap: Snapshot | None, inner: Any, *, backend: str, model: str, reply_type: type,
                 defaults: dict | None = None):
        self.snap, self.inner, self.backend, self.model_name = snap, inner, backend, model
        self.reply_type = reply_type
        self.defaults = defaults or {}
        self.max_new_tokens = self.defaults.get("max_new_tokens", getattr(inner, "max_new_tokens", 512))

    @classmethod
    def wrap(cls, snap: Snapshot, client: Any, reply_type: type, spec: Any = None) -> "SnapshotLLM":
        if spec is not None:
            return cls(snap, client, backend=spec.backend, model=spec.name, reply_type=reply_type,
                       defaults={"max_new_tokens": spec.max_new_tokens, "extra": spec.extra})
        return cls(snap, client, backend=type(client).__name__, reply_type=reply_type,
                   model=getattr(client, "model_name", type(client).__name__),
                   defaults={"max_new_tokens": getattr(client, "max_new_tokens", None)})

    async def chat(self, messages: list[dict], **sampling):
        key = {"backend": self.backend, "model": self.model_name, "messages": messages,
               "sampling": {**self.defaults, **sampling}}
        hit = self.snap.cache_get("llm", key)
        if hit is not None:
            self.snap.hit()
            if "error" in hit:
                name, _, message = hit["error"].partition(": ")
                raise type(name, (Exception,), {})(message)
            return self.reply_type(**hit["reply"])
        if self.snap.mode == "replay" or self.inner is None:
            raise self.snap.miss(f"an LLM call to {self.model_name}")
        try:
            reply = await self.inner.chat(messages, **sampling)
        except Exception as exc:
            self.snap.cache_put("llm", key, {"error": f"{type(exc).__name__}: {exc}"})
            raise
        if isinstance(reply, str):
            reply = self.reply_type(text=reply)
        fields = ("text", "reasoning_content", "prompt_tokens", "completion_tokens", "finish_reason")
        self.snap.cache_put("llm", key, {"reply": {f: getattr(reply, f) for f in fields}})
        return reply


def open_snapshot(web_cfg: WebParams, *, stats: dict, summarizer: str | None,
                  url_key: Callable[[str], str]) -> Snapshot:
    """`web.snapshot` opened to record (web.mode: live) or replay (web.mode: replay); `stats`: the toolbox's counters,
    `summarizer`: the summarizer model's name for the manifest, `url_key`: the local web's URL folding."""
    if web_cfg.mode == "replay" and not web_cfg.snapshot:
        raise SnapshotError("web.mode: replay needs web.snapshot: PATH (a folder recorded with web.mode: live and "
                            "web.snapshot, or a local web exported with `python -m wdlib.snapshot export`)")
    if web_cfg.mode == "local":
        raise SnapshotError("web.snapshot is for web.mode: live (record) or replay; the local web is exported with "
                            "`python -m wdlib.snapshot export --params ... --out PATH`")
    path = Path(web_cfg.snapshot).expanduser()
    path = path if path.is_absolute() else REPO_ROOT / path
    return Snapshot(path, "replay" if web_cfg.mode == "replay" else "record", stats=stats, url_key=url_key, session={
        "backends": {"search": web_cfg.search_backend, "fetch": f"httpx {httpx.__version__}",
                     "extractor": web_cfg.extractor},
        "models": {"summarizer": summarizer}})

"""The search tool's backends: `LocalSearch` (bm25s over the local web, in process) and `SerpApiSearch` (Google
through SerpAPI's official client; the key from the environment; answers cached on disk so re-runs cost no API
calls). A backend's `results(query)` gives SerpAPI `organic_results`-shaped items (title, link, snippet, date?), which
`wdlib.react.render_search` renders for the agent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from wdlib.redact import register_env

class SearchError(RuntimeError):
    pass


class LocalSearch:
    """bm25s over the local web, in process (sub-millisecond); the server's /search answers from the same index."""

    name = "local"

    def __init__(self, web: Any, top_k: int = 10):  # web: a wdlib.web.LocalWeb
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

        register_env(self.key_env)  # its value never reaches a record or a log (urllib3 logs the URL at DEBUG)
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

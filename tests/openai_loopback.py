"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions API, for tests and benchmarks.

It stands in for what cannot exist here (a paid API or a GPU vLLM server). Replies come from a `handler(body)` that
returns (status, payload) — sync or async, so it can sleep to model latency without blocking other requests.
Like OpenAI and vLLM, the server cuts the reply at the first stop string (the stop string itself is not returned).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from typing import Any, Callable

from aiohttp import web


def completion(content: str, *, finish_reason: str = "stop", reasoning_content: str | None = None,
               prompt_tokens: int = 10, completion_tokens: int | None = None, model: str = "loopback") -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning_content is not None:
        message["reasoning_content"] = reasoning_content
    return {
        "id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens,
                  "completion_tokens": completion_tokens if completion_tokens is not None else len(content) // 4 + 1,
                  "total_tokens": prompt_tokens + (completion_tokens or len(content) // 4 + 1)},
    }


def search_then_answer(answer: Callable[[dict], str], query: str = "x") -> Callable[[dict], tuple[int, dict]]:
    """A scripted agent policy: with no observation yet (system + question) it searches for `query`; after the
    observation it answers `answer(body)` (the request body: its `messages`, `model`...)."""
    def handler(body: dict) -> tuple[int, dict]:
        if len(body["messages"]) == 2:
            return 200, completion('<think>search</think>\n<tool_call>\n{"name": "search", "arguments": '
                                   f'{{"query": ["{query}"]}}}}\n</tool_call>')
        return 200, completion(f"<think>found it</think>\n<answer>{answer(body)}</answer>")
    return handler


def apply_stop(payload: dict, stop: list[str] | None) -> dict:
    """Cut the content at the earliest stop string, as OpenAI-compatible servers do."""
    if not stop or payload.get("choices") is None:
        return payload
    message = payload["choices"][0]["message"]
    content = message.get("content") or ""
    cuts = [content.index(s) for s in stop if s in content]
    if cuts:
        message["content"] = content[: min(cuts)]
        payload["choices"][0]["finish_reason"] = "stop"
    return payload


class LoopbackOpenAI:
    """`with LoopbackOpenAI(handler) as server:` → `server.base_url`; `server.requests` holds (headers, body)."""

    def __init__(self, handler: Callable[[dict], Any]):
        self.handler = handler
        self.requests: list[tuple[dict, dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.requests.append((dict(request.headers), body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            result = self.handler(body)
            if inspect.isawaitable(result):
                result = await result
            status, payload = result
            headers = {}
            if isinstance(payload, tuple):  # (payload, headers)
                payload, headers = payload
            if status == 200:
                payload = apply_stop(payload, body.get("stop"))
            return web.Response(status=status, text=json.dumps(payload), content_type="application/json",
                                headers=headers)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def __enter__(self) -> "LoopbackOpenAI":
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

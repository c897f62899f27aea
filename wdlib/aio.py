"""Asyncio helpers: run a coroutine from synchronous code (`run_sync`, also inside Jupyter/papermill where a loop is
already running); gather concurrent requests into batched calls on a worker thread (`Batcher`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Callable, Coroutine


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A kernel's loop is running in this thread: run ours in a worker thread with its own loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Batcher:
    """Gathers the `generate` requests that arrive together into one backend call (the in-process clients of
    `wdlib.llm`).

    `run_batch(prompts, samplings) -> list[reply]` is synchronous and runs in a worker thread. Requests that arrive
    while a batch is generating wait and form the next batch.
    """

    def __init__(self, run_batch: Callable[[list[list[int]], list[dict]], list[Any]], max_batch_size: int,
                 wait_s: float = 0.005, group_key: Callable[[dict], Any] = lambda s: None):
        self.run_batch, self.max_batch_size, self.wait_s, self.group_key = run_batch, max_batch_size, wait_s, group_key
        self._pending: list[tuple[list[int], dict, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batch_sizes: list[int] = []  # observed, for tests and tuning

    async def submit(self, prompt_ids: list[int], sampling: dict) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (e.g. another run_sync): start afresh
            self._loop, self._pending, self._worker = loop, [], None
        future = loop.create_future()
        self._pending.append((prompt_ids, sampling, future))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(self.wait_s)  # let requests issued in the same tick join this batch
            take = self._pending[: self.max_batch_size]
            self._pending = self._pending[self.max_batch_size:]
            groups: dict[Any, list] = {}
            for request in take:
                groups.setdefault(self.group_key(request[1]), []).append(request)
            for requests in groups.values():
                live = [r for r in requests if not r[2].cancelled()]
                if not live:
                    continue
                self.batch_sizes.append(len(live))
                try:
                    replies = await asyncio.to_thread(self.run_batch, [r[0] for r in live], [r[1] for r in live])
                except Exception as e:  # every waiter learns of the failure
                    for _, _, fut in live:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                for (_, _, fut), reply in zip(live, replies):
                    if not fut.done():
                        fut.set_result(reply)

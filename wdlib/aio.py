"""Run a coroutine from synchronous code, including inside Jupyter/papermill where a loop is already running."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Coroutine


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A kernel's loop is running in this thread: run ours in a worker thread with its own loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()

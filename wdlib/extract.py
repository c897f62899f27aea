"""Page parsing: main text (`extract_text`: trafilatura or newspaper3k), links, and the HTML with absolute links
(`parse_page`), run by the toolbox in worker processes (`ParsePool`).

trafilatura and newspaper3k evaluate module-level lxml XPath objects, which lxml documents as unsafe to share between
threads: two extractions on worker threads corrupted the heap here ("double free or corruption"), so they ran one at
a time behind a lock, on threads that hold the GIL for most of the work. In worker processes nothing is shared: pages
parse in parallel, off the event loop and off the GIL, and a parse that crashes or hangs takes down only its own
worker, which is replaced; the caller gets a `ParseError` (the visit tool turns it into an error observation).

Written by hand because the standard pools cannot do that last part: `concurrent.futures.ProcessPoolExecutor` marks
the whole pool broken (every pending parse fails) when one worker dies and cannot stop one running task;
`multiprocessing.Pool` waits forever for a task whose worker died. A worker is a fresh interpreter
(`python -m wdlib.extract`, tasks and results pickled over two pipes), so it never inherits the parent's threads or
lxml state, and, unlike multiprocessing's spawn/forkserver workers, never re-runs the parent's main script.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable

from wdlib.sites import html_links, html_text


class ParseError(RuntimeError):
    """A page could not be parsed: the parser raised, crashed, or ran past the time limit."""


# Within one process (extract_workers: 0, tests, crawlers calling extract_text directly) the extractors still run on
# threads: one extraction at a time, for the reason above.
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

        try:
            fallback = html_text(lxml.html.fromstring(html))
        except Exception:  # not HTML at all
            fallback = ""
        text = fallback if len(fallback) > len(text) else text
    return text.strip()


def parse_page(html: str, url: str, base: str, content_type: str, extractor: str) -> tuple[str, list[str], str]:
    """(main text, absolute links, the HTML with links made absolute when `base` differs from `url`)."""
    import lxml.html

    if content_type.startswith("text/plain"):
        return html, [], html
    text = extract_text(html, url, extractor)
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


def _serve(tasks: Connection, results: Connection) -> None:
    """A worker: run (function, args) tasks until told to stop; exceptions go back as errors, crashes kill it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import lxml.html  # noqa: F401  (imported while the parent is busy elsewhere, not on the first page)
    import trafilatura  # noqa: F401

    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        fn, args = task
        try:
            result = ("ok", fn(*args))
        except Exception as exc:
            result = ("error", f"{type(exc).__name__}: {exc}")
        results.send(result)


class _Worker:
    """One worker process and its two pipes."""

    def __init__(self):
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the parent's imports
        self.process = subprocess.Popen([sys.executable, "-m", "wdlib.extract", str(task_r), str(result_w)],
                                        pass_fds=(task_r, result_w), env=env, stdin=subprocess.DEVNULL)
        os.close(task_r)
        os.close(result_w)
        self.tasks, self.results = Connection(task_w, readable=False), Connection(result_r, writable=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def exitcode(self) -> int | None:
        try:
            return self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, kill: bool = False) -> None:
        if not kill:
            try:
                self.tasks.send(None)
                self.process.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.tasks.close()
        self.results.close()


class ParsePool:
    """`workers` processes (default: the CPU cores), each running one task at a time with a time limit.

    `run(fn, *args)` blocks until a worker is free and returns `fn(*args)` computed there (`fn` must be importable:
    a module-level function); call it from a thread (`asyncio.to_thread`), never on the event loop."""

    def __init__(self, workers: int | None = None, timeout_s: float = 60.0):
        self.workers = workers or os.cpu_count() or 1
        self.timeout_s = timeout_s
        self.stats = {"tasks": 0, "errors": 0, "crashed": 0, "timed_out": 0}
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(self.workers):
            self._idle.put(None)  # a free slot; its process starts on first use
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def run(self, fn: Callable, *args: Any, timeout_s: float | None = None) -> Any:
        if self._closed:
            raise ParseError("the page-parser pool is closed")
        worker = self._idle.get()
        try:
            if worker is None:
                worker = self._start()
            self.stats["tasks"] += 1
            limit = self.timeout_s if timeout_s is None else timeout_s
            start = time.monotonic()
            try:
                worker.tasks.send((fn, args))
                if not worker.results.poll(limit):
                    self.stats["timed_out"] += 1
                    worker = self._replace(worker)
                    raise ParseError(f"the page parser took longer than {limit:g} s and was stopped")
                status, value = worker.results.recv()
            except (EOFError, OSError):  # the process died mid-task (a crash in C code, killed, out of memory)
                self.stats["crashed"] += 1
                code = worker.exitcode()
                worker = self._replace(worker)
                raise ParseError(f"the page parser crashed ({_describe(code)}) after "
                                 f"{time.monotonic() - start:.1f} s") from None
            if status != "ok":
                self.stats["errors"] += 1
                raise ParseError(value)
            return value
        finally:
            self._idle.put(worker)

    def _start(self) -> _Worker:
        worker = _Worker()
        with self._lock:
            self._all.add(worker)
        return worker

    def _replace(self, worker: _Worker) -> _Worker | None:
        worker.stop(kill=True)
        with self._lock:
            self._all.discard(worker)
        return None if self._closed else self._start()

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._all]

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers, self._all = list(self._all), set()
        for worker in workers:
            worker.stop()

    def __enter__(self) -> "ParsePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _describe(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


if __name__ == "__main__":  # a worker: python -m wdlib.extract TASK_FD RESULT_FD
    _serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))

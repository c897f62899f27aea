"""Page parsing in worker processes (`wdlib.extract.ParsePool`): real pages of the local web parse in parallel with
the same result as in process; a parse that crashes (SIGABRT, what glibc raises on "double free or corruption") or
hangs takes down only its worker, which is replaced, and a visit reports it as an error observation.

`scripts/check_extract_exit.sh` runs this file 20 times in a row and fails on any crash at exit."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from wdlib import extract
from wdlib.extract import ParseError, ParsePool, parse_page
from wdlib.tools import NO_CONTENT_SUMMARY, Toolbox

URL = "https://docs.python.org/3/library/os.path.html"


def crash_parse(*args):  # module level: the worker imports it by name
    os.abort()


def hang_parse(*args):
    time.sleep(3600)


@pytest.fixture
def pool():
    with ParsePool(workers=2, timeout_s=30) as p:
        yield p


def local_pages(cfg, n: int) -> list[tuple[str, str]]:
    from wdlib.web import LocalWeb

    web = LocalWeb.load(cfg.web)
    pages = [p for p in web.pages if p.site == "python-docs"][:n]
    return [(p.url, web.html(p).decode("utf-8", errors="replace")) for p in pages]


def test_pages_parse_in_parallel_processes_like_in_process(local_web_cfg, pool):
    pages = local_pages(local_web_cfg, 24)
    expected = [parse_page(html, url, url, "text/html", "trafilatura") for url, html in pages]
    results: list = [None] * len(pages)

    def work(i: int) -> None:
        url, html = pages[i]
        results[i] = pool.run(parse_page, html, url, url, "text/html", "trafilatura")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(pages))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected and pool.stats["tasks"] == len(pages)
    assert len(set(pool.pids())) == 2 and os.getpid() not in pool.pids()


def both_started(pool) -> None:
    threads = [threading.Thread(target=pool.run, args=(time.sleep, 0.3)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_a_concurrent_crawl_parses_every_page(local_web_cfg):
    """What corrupted the heap on threads: many pages fetched at once (a crawl), each parsed while others are."""
    cfg = local_web_cfg.model_copy(deep=True)
    urls = [url for url, _ in local_pages(cfg, 40)]

    async def crawl(toolbox):
        return await asyncio.gather(*(toolbox.fetch(url) for url in urls))

    with Toolbox.from_config(cfg) as toolbox:
        pages = asyncio.run(crawl(toolbox))
        assert toolbox._pool.stats["tasks"] == len(urls) and toolbox._pool.stats["crashed"] == 0
    assert all(p.ok and p.text.strip() for p in pages) and sum(bool(p.links) for p in pages) > len(urls) // 2


def test_two_workers_run_at_the_same_time(pool):
    both_started(pool)  # (a worker's start-up, a fresh interpreter, is not what is measured)
    start = time.perf_counter()
    threads = [threading.Thread(target=pool.run, args=(time.sleep, 1.0)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.perf_counter() - start < 1.9  # two 1-second tasks side by side, not one after the other


def test_a_crash_kills_only_its_worker_which_is_replaced(pool):
    both_started(pool)
    before = set(pool.pids())
    with pytest.raises(ParseError, match="crashed.*SIGABRT"):
        pool.run(crash_parse)
    after = set(pool.pids())
    assert len(before) == len(after) == 2 and len(before & after) == 1  # one worker replaced, the other untouched
    assert pool.stats["crashed"] == 1
    assert pool.run(len, "still works") == 11


def test_a_hang_is_stopped_at_the_time_limit(pool):
    start = time.perf_counter()
    with pytest.raises(ParseError, match="longer than 1 s"):
        pool.run(hang_parse, timeout_s=1)
    assert time.perf_counter() - start < 10 and pool.stats["timed_out"] == 1
    assert pool.run(len, "abc") == 3 and len(pool.pids()) <= 2


def test_an_exception_in_the_parser_keeps_the_worker(pool):
    both_started(pool)
    pids = set(pool.pids())
    with pytest.raises(ParseError, match="ValueError"):
        pool.run(int, "not a number")
    assert len(pids) == 2 and set(pool.pids()) == pids and pool.stats["errors"] == 1


@pytest.mark.parametrize("parser, reason", [(crash_parse, "crashed"), (hang_parse, "longer than")])
def test_a_visit_whose_parse_fails_is_an_error_observation(local_web_cfg, monkeypatch, parser, reason):
    cfg = local_web_cfg.model_copy(deep=True)
    cfg.web.extract_timeout_s = 2
    with Toolbox.from_config(cfg) as toolbox:
        monkeypatch.setattr(extract, "parse_page", parser)
        obs = asyncio.run(toolbox.call("visit", {"url": [URL], "goal": "what join does"}))
        assert NO_CONTENT_SUMMARY in obs and reason in obs and URL in obs
        assert URL not in toolbox._parsed  # a failure is not remembered
        monkeypatch.setattr(extract, "parse_page", parse_page)
        obs = asyncio.run(toolbox.call("visit", {"url": [URL], "goal": "what join does"}))
        assert NO_CONTENT_SUMMARY not in obs and "join" in obs  # the replaced worker parses the next page
    assert toolbox._pool is None  # closing the toolbox stopped its workers


def test_in_process_parsing_when_workers_is_zero(local_web_cfg):
    cfg = local_web_cfg.model_copy(deep=True)
    cfg.web.extract_workers = 0
    with Toolbox.from_config(cfg) as toolbox:
        page = asyncio.run(toolbox.fetch(URL))
        assert page.ok and "join" in page.text and toolbox._pool is None

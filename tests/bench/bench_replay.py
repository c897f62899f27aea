"""Replay speed: visits served from a 10k-page snapshot vs the same visits on the local web, same URLs, same run.

The snapshot is the local web (Python docs + the whole encyclopedia) exported with `wdlib.snapshot.export_local_web`
(kept under the cache after the first run: exporting fetches and extracts every page once, minutes). Each visit is
the visit tool's whole path with the extractive evidence (no summarizer): fetch (replay: the WARC record through
the httpx transport; local: the loopback server), page text (replay: the recorded conversion record; local:
trafilatura, then the toolbox's parse cache), evidence for the goal. Visits run 8 at a time, as a rollout group's do.

    .venv/bin/python tests/bench/bench_replay.py [--params params/smoke.yaml] [--pages 10000] [--visits 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time

from wdlib import config, params
from wdlib.sites import BUILD_VERSION, url_key
from wdlib.snapshot import Snapshot, export_local_web
from wdlib.tools import Toolbox


async def visit_all(toolbox: Toolbox, urls: list[str], concurrency: int) -> float:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(url: str) -> str:
        async with semaphore:
            return await toolbox.visit(url, "what is this page about and when did it happen")

    start = time.perf_counter()
    observations = await asyncio.gather(*(one(u) for u in urls))
    seconds = time.perf_counter() - start
    bad = [o for o in observations if "could not be accessed" in o]
    assert not bad, bad[0][:300]
    return len(urls) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="smoke.yaml")
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--visits", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    cfg = params.load(args.params)
    cfg.web.encyclopedia_max_pages = None  # the whole encyclopedia: ~10k pages with the docs
    out = config.cache_dir() / "bench" / f"snapshot-{args.pages}-v{BUILD_VERSION}"
    if not (out / "manifest.json").is_file():
        start = time.perf_counter()
        export_local_web(cfg, out, limit=args.pages)
        print(f"exported {args.pages} pages to {out} in {time.perf_counter() - start:.0f} s")
    snap = Snapshot(out, "replay", url_key=url_key)
    urls = [e.info["uri"] for e in snap._fetches.values()]
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"snapshot: {len(urls)} pages, {size / 1e6:.0f} MB ({out})")
    rng = random.Random(0)
    sample = [rng.choice(urls) for _ in range(args.visits)]

    replay_cfg = cfg.model_copy(deep=True)
    replay_cfg.web.mode, replay_cfg.web.snapshot = "replay", str(out)
    with Toolbox.from_config(replay_cfg) as toolbox:
        asyncio.run(visit_all(toolbox, sample[:20], args.concurrency))  # warm-up: imports, first file handles
        # three rounds, the median reported: the machine may be shared
        rounds = sorted(asyncio.run(visit_all(toolbox, sample, args.concurrency)) for _ in range(3))
        replay_1 = asyncio.run(visit_all(toolbox, sample[:500], 1))
        assert toolbox.stats["snapshot_misses"] == 0
    with Toolbox.from_config(cfg) as toolbox:
        local = asyncio.run(visit_all(toolbox, sample, args.concurrency))
    replay = rounds[1]
    print(f"replay: {replay:.0f} visits/s (median of 3 rounds: {', '.join(f'{r:.0f}' for r in rounds)}; "
          f"{args.concurrency} at a time; one at a time: {replay_1:.0f}/s)   local web: {local:.0f} visits/s   "
          f"replay / local: x{replay / local:.1f}   (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"goal >= 200 visits/s on 2 cores: {'met' if replay >= 200 else 'NOT met'}")


if __name__ == "__main__":
    main()

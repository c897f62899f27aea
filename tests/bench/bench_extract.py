"""Main-text extraction, trafilatura vs newspaper3k, on the same local-web pages: pages/s and text recall.

The reference text of a page is what we know is its main content: the Wikipedia summary for encyclopedia pages, the
documentation body (the Sphinx/DocBook main region) for documentation pages. Recall = share of the reference's
words (as a multiset) found in the extracted text; precision = share of extracted words that are in the reference.

    .venv/bin/python tests/bench/bench_extract.py [--params params/smoke.yaml] [--pages 80]
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections import Counter

from wdlib import config, params
from wdlib.extract import extract_text
from wdlib.web import LocalWeb


def words(text: str) -> Counter:
    return Counter(re.findall(r"\w+", text.lower()))


def overlap(ref: Counter, got: Counter) -> tuple[float, float]:
    common = sum((ref & got).values())
    return common / max(1, sum(ref.values())), common / max(1, sum(got.values()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="smoke.yaml")
    parser.add_argument("--pages", type=int, default=80, help="pages per site")
    args = parser.parse_args()
    cfg = params.load(args.params)
    web = LocalWeb.load(cfg.web)
    rng = random.Random(0)
    sample = []
    for site in cfg.web.sites:
        pages = [p for p in web.pages if p.site == site]
        sample += rng.sample(pages, min(args.pages, len(pages)))
    htmls = [(p, web.html(p).decode("utf-8", errors="replace")) for p in sample]
    print(f"{len(htmls)} pages from {cfg.web.sites}")
    results = {}
    for extractor in ("trafilatura", "newspaper"):
        extract_text(htmls[0][1], htmls[0][0].url, extractor)  # warm-up (imports, caches)
        per_site: dict[str, list[tuple[float, float]]] = {}
        start = time.perf_counter()
        texts = [extract_text(html, p.url, extractor) for p, html in htmls]
        seconds = time.perf_counter() - start
        for (p, _), text in zip(htmls, texts):
            per_site.setdefault(p.site, []).append(overlap(words(p.text), words(text)))
        allr = [r for v in per_site.values() for r in v]
        results[extractor] = {"pages_s": len(htmls) / seconds, "recall": sum(r for r, _ in allr) / len(allr),
                              "precision": sum(q for _, q in allr) / len(allr),
                              "sites": {s: sum(r for r, _ in v) / len(v) for s, v in per_site.items()}}
        r = results[extractor]
        sites = ", ".join(f"{s} {v:.3f}" for s, v in r["sites"].items())
        print(f"{extractor:12s} {r['pages_s']:7.1f} pages/s  recall {r['recall']:.3f}  precision "
              f"{r['precision']:.3f}  (recall by site: {sites})")
    t, n = results["trafilatura"], results["newspaper"]
    print(f"trafilatura / newspaper3k: speed x{t['pages_s'] / n['pages_s']:.2f}, recall {t['recall']:.3f} vs "
          f"{n['recall']:.3f} (x{t['recall'] / max(n['recall'], 1e-9):.2f})")
    best = max(results, key=lambda e: (round(results[e]["recall"], 2), results[e]["pages_s"]))
    print(f"better: {best} (WebParams.extractor default: {config.WebParams().extractor})")


if __name__ == "__main__":
    main()

"""Page-level ranking over the passage index: rank pages, not stray passages.

The passage index (BM25-MaxP, `wdlib.web`) finds where a query's words are, but a page that merely mentions them
(a navigation hub repeating every page's title, a what's-new list, an article that names the entity asked about)
can outrank the page that answers. The pages of the best passages are re-scored with two page fields:

- a **title field** (the title without the site's boilerplate, plus the words of the URL's last part): the passage
  score is multiplied by `1 + TITLE_WEIGHT * recall^RECALL_POWER * precision`, idf-weighted overlaps between the
  query's terms and the title's, so a query that names the page (all of its title, little else) lifts it and a long
  query that happens to contain some title barely does;
- a **link-text fraction** per page (characters inside `<a>` over all characters of the main region): pages that are
  mostly links (contents, category indexes) are demoted by `hub_factor` (1 below `HUB_FROM`, falling linearly to
  `1 - HUB_DEMOTION` at 1.0), unless the query names them: the demotion shrinks as the title match grows, so
  "graphical user interfaces with Tk" still finds the Tk chapter's hub page;
- the **lead**: a page's first passage says what the page is about (an article's definition, a module's summary),
  so its score counts `1 + LEAD_BOOST` times; a description of an entity ("capital and most populous city of
  Sudan") matches its lead better than the pages that mention it.

Weights were chosen on the dev part of `tests/bench/search_queries.jsonl` (never on its held-out or fresh parts);
`tests/bench/bench_search.py` reports the held-out and fresh parts beside the passage-only ranking. Both fields cost
one set intersection per candidate page. A page keeps the position of its first passage among the candidates (the
snippet's region) even when the lead boost makes a later passage its best.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np

TITLE_WEIGHT = 1.0
RECALL_POWER = 2
HUB_FROM = 0.3
HUB_DEMOTION = 0.6
LEAD_BOOST = 0.2
_BOILERPLATE = re.compile(r"\s+[—-]\s+(Python [\d.]+ documentation|Wikipedia)$|^PostgreSQL: Documentation: \d+: ")


def title_field(title: str, url: str) -> str:
    """What a page is called: its title without the site's suffix/prefix, and the words of its URL's last part."""
    from urllib.parse import unquote

    last = unquote(re.sub(r"(/index)?\.html?$|/$", "", url)).rsplit("/", 1)[-1]
    return _BOILERPLATE.sub("", title) + "\n" + re.sub(r"[._\-]+", " ", last)


def link_text_fraction(region) -> float:
    """Share of a page region's visible characters that sit inside links (1.0 for a table of contents)."""
    total = len(re.sub(r"\s+", "", region.text_content()))
    linked = sum(len(re.sub(r"\s+", "", a.text_content())) for a in region.iter("a"))
    return min(1.0, linked / total) if total else 0.0


def hub_factor(link_fraction: np.ndarray) -> np.ndarray:
    over = np.clip((link_fraction - HUB_FROM) / (1.0 - HUB_FROM), 0.0, 1.0)
    return (1.0 - HUB_DEMOTION * over).astype(np.float32)


def build_page_fields(pages: list, tokenizer, main_region_of: Callable, out: Path, show_progress: bool = False) -> None:
    """Write each page's title-field token ids (`out/title_ids.npz`) and the link-text fraction of its main region
    (`out/link_fraction.npy`; `main_region_of(page)`: the parsed element, `wdlib.sites.main_region`)."""
    from tqdm.auto import tqdm

    fractions = np.zeros(len(pages), dtype=np.float32)
    for i, page in enumerate(tqdm(pages, desc="[web] page fields", unit="page", disable=not show_progress,
                                  mininterval=1.0)):
        try:
            fractions[i] = link_text_fraction(main_region_of(page))
        except Exception:  # an unparsable page is not a hub
            fractions[i] = 0.0
    np.save(out / "link_fraction.npy", fractions)
    # The passages' vocabulary: one tokenization of a query serves passages and titles.
    ids = tokenizer.tokenize([title_field(p.title, p.url) for p in pages], update_vocab=False,
                             show_progress=False, return_as="ids")
    ids = [sorted(set(x) - {0}) for x in ids]  # 0: words the passages never use
    np.savez(out / "title_ids.npz", flat=np.array([t for x in ids for t in x], dtype=np.int32),
             offsets=np.cumsum([0] + [len(x) for x in ids]).astype(np.int64))


class PageRanker:
    """Scores the pages of the best passages with the page fields."""

    def __init__(self, folder: Path, retriever):
        data = np.load(folder / "title_ids.npz")
        flat, offsets = data["flat"], data["offsets"]
        self.titles = [frozenset(flat[a:b].tolist()) for a, b in zip(offsets[:-1], offsets[1:])]
        self.hub = hub_factor(np.load(folder / "link_fraction.npy"))
        # idf of each term over the passages (bm25s keeps a CSC matrix: one column of passages per term)
        df = np.diff(retriever.scores["indptr"]).astype(np.float64)
        n = retriever.scores["num_docs"]
        self.idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def title_match(self, query_terms: frozenset, page: int) -> float:
        """How well the title field and the query name the same thing: idf-weighted recall x precision."""
        title = self.titles[page]
        common = query_terms & title
        if not common:
            return 0.0
        w = lambda terms: float(sum(self.idf[t] for t in terms))  # noqa: E731
        return (w(common) / w(query_terms)) ** RECALL_POWER * w(common) / w(title)

    def rank(self, query_ids: list[int], passage_pages: np.ndarray, passage_scores: np.ndarray, k: int,
             lead: np.ndarray | None = None) -> list[tuple[int, float, int]]:
        """(page index, score, best passage's position in `passage_pages`), best first, at most k. `lead[i]`: passage
        i is its page's first."""
        terms = frozenset(t for t in query_ids if 0 < t < len(self.idf))
        lead = np.zeros(len(passage_pages), dtype=bool) if lead is None else lead
        best: dict[int, tuple[float, int]] = {}
        for pos, (page, score, first) in enumerate(zip(passage_pages.tolist(), passage_scores.tolist(), lead.tolist())):
            score *= 1.0 + LEAD_BOOST if first else 1.0
            if score > 0 and (page not in best or score > best[page][0]):
                best[page] = (score, best[page][1] if page in best else pos)
        ranked = []
        for page, (score, pos) in best.items():
            match = self.title_match(terms, page)
            hub = float(self.hub[page])
            hub += (1.0 - hub) * min(1.0, match)  # a hub the query names is what it asks for
            ranked.append((page, score * hub * (1.0 + TITLE_WEIGHT * match), pos))
        ranked.sort(key=lambda r: (-r[1], r[0]))
        return ranked[:k]

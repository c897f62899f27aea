"""The local web, built and searchable: the chosen sites (`wdlib.sites`) and one bm25s index over their passages.

`LocalWeb` is the built web in memory (pages by URL, search answering in SerpAPI's shape), shared by the tools and
the loopback server (`wdlib.webserver`).

Layout under `<cache>/web/`: `index/<key>/` (bm25s index over the chosen sites), beside the sites' folders. Every
step writes its output atomically and is skipped when the output exists, so a second build takes seconds.

    python -m wdlib.web build --params params/smoke.yaml
    python -m wdlib.web serve --params params/smoke.yaml [--port 8000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from wdlib import params
from wdlib.config import ParamsError, WebParams
from wdlib.ranking import PageRanker, build_page_fields
from wdlib.sites import (BUILD_VERSION, DOC_SITES, Page, WebBuildError, build_sites, load_site_pages, main_region,
                         site_dir, url_key, web_dir)
from wdlib.text import bm25_tokenizer, chunk_spans

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# ---------------------------------------------------------------- the index
def index_dir(web_cfg: WebParams) -> Path:
    key = json.dumps([sorted(web_cfg.sites), web_cfg.encyclopedia_max_pages, BUILD_VERSION])
    return web_dir(web_cfg) / "index" / hashlib.sha1(key.encode()).hexdigest()[:12]


def chunk_text(page: Page, start: int, end: int) -> str:
    # Every passage carries its page's title (twice: a search engine weighs titles) and short description.
    return f"{page.title}\n{page.title}\n{page.description}\n{page.text[start:end]}"


def build(web_cfg: WebParams, quiet: bool = False) -> dict:
    """Build (or find cached) sites and index for `web_cfg`; returns a summary with per-site pages/links."""
    import bm25s

    start = time.time()
    metas = build_sites(web_cfg)
    out = index_dir(web_cfg)
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        import numpy as np

        pages = load_site_pages(web_cfg)
        # Passages, not whole pages, are indexed: a page ranks by its best passage (BM25-MaxP), so a long
        # reference page is not buried by length normalisation and the snippet comes from that passage.
        chunks = np.array([(i, a, b) for i, p in enumerate(pages) for a, b in chunk_spans(p.text)], dtype=np.int64)
        tokenizer = bm25_tokenizer()
        ids = tokenizer.tokenize([chunk_text(pages[i], a, b) for i, a, b in chunks], show_progress=not quiet)
        retriever = bm25s.BM25()
        retriever.index(ids, show_progress=not quiet)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        retriever.save(tmp, show_progress=False)
        tokenizer.save_vocab(tmp)
        tokenizer.save_stopwords(tmp)
        np.save(tmp / "chunks.npy", chunks)
        folders = {name: site_dir(web_cfg, name) for name in web_cfg.sites}

        def region(p: Page):
            import lxml.html

            html = p.html if p.html is not None else (folders[p.site] / p.file).read_bytes()
            return main_region(lxml.html.fromstring(html), DOC_SITES[p.site].main if p.site in DOC_SITES else ())

        build_page_fields(pages, tokenizer, region, tmp, show_progress=not quiet)
        size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        meta = {"sites": web_cfg.sites, "pages": len(pages), "passages": len(chunks),
                "vocab": len(tokenizer.get_vocab_dict()), "tokens": int(sum(len(x) for x in ids)), "bytes": size,
                "version": BUILD_VERSION, "encyclopedia_max_pages": web_cfg.encyclopedia_max_pages}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    meta = json.loads(meta_path.read_text())
    summary = {"sites": metas, "index": meta, "index_dir": str(out), "seconds": round(time.time() - start, 2)}
    if not quiet:
        for name, m in metas.items():
            print(f"[web] {name}: {m['pages']} pages, {m['links']} links ({m['package']})")
        print(f"[web] index: {meta['pages']} pages, {meta['passages']} passages, {meta['vocab']} terms, "
              f"{meta['tokens']} tokens, "
              f"{meta['bytes'] / 1e6:.1f} MB at {out} ({summary['seconds']} s)")
    return summary


# ---------------------------------------------------------------- search over the local web
_SNIPPET_CHARS = 200


def snippet(page: Page, terms: list[str], span: tuple[int, int] | None = None) -> str:
    """~200 characters of the page (within `span`, the best passage) around the densest cluster of query terms,
    Google-style, with ellipses."""
    text = page.text
    lo, hi = span or (0, len(text))
    lower = text[lo:hi].translate(_ASCII_LOWER)  # ASCII lowering keeps offsets aligned with the text
    hits: list[tuple[int, int]] = []  # (position in text, term index)
    for t_idx, term in enumerate(terms):
        pos, found = lower.find(term), 0
        while pos != -1 and found < 200:
            if pos == 0 or not lower[pos - 1].isalnum():  # a word start, not the middle of a word
                hits.append((lo + pos, t_idx))
                found += 1
            pos = lower.find(term, pos + 1)
    if not hits:
        start = lo
    else:
        hits.sort()
        best, start = -1, hits[0][0]
        for i, (pos, _) in enumerate(hits):
            j, covered = i, set()
            while j < len(hits) and hits[j][0] < pos + _SNIPPET_CHARS - 40:
                covered.add(hits[j][1])
                j += 1
            if len(covered) > best:
                best, start = len(covered), pos
        start = max(lo, start - 40)
        if start > lo:  # begin at a sentence or word boundary
            sentence = max(text.rfind(". ", start - 60, start + 20), text.rfind("\n", start - 60, start + 20))
            start = sentence + 2 if sentence != -1 and text[sentence] == "." else sentence + 1 if sentence != -1 \
                else text.find(" ", start) + 1
    end = start + _SNIPPET_CHARS
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + 40 else end
    out = re.sub(r"\s+", " ", text[start:end]).strip()
    return ("..." if start > 0 else "") + out + (" ..." if end < len(text) else "")


class LocalWeb:
    """The built local web in memory: pages by URL and one bm25s index, shared by the server and the tools."""

    def __init__(self, web_cfg: WebParams, pages: list[Page], retriever, tokenizer, chunks, meta: dict,
                 ranker: PageRanker | None = None):
        self.cfg, self.pages, self.retriever, self.tokenizer, self.meta = web_cfg, pages, retriever, tokenizer, meta
        self.ranker = ranker  # page fields (title, link-text fraction); None: rank by best passage only
        self.chunks = chunks  # per indexed passage: (page index, start, end) in the page's text
        self.by_key = {url_key(p.url): i for i, p in enumerate(pages)}
        self.hosts = {urlsplit(p.url).hostname.removeprefix("www.") for p in pages}
        self.folders = {name: site_dir(web_cfg, name) for name in web_cfg.sites}
        self._stem = tokenizer.stemmer
        self._stopwords = set(tokenizer.stopwords)
        self._lock = threading.Lock()  # the stemmer and tokenizer are not thread-safe

    @classmethod
    def load(cls, web_cfg: WebParams, build_missing: bool = True) -> "LocalWeb":
        """Load (building first if needed) the local web; one instance per corpus per process."""
        import bm25s
        import numpy as np

        out = index_dir(web_cfg)
        cached = _LOADED.get(out)
        if cached is not None:
            return cached
        if not (out / "meta.json").is_file():
            if not build_missing:
                raise WebBuildError(f"the local web for sites {web_cfg.sites} is not built: run "
                                    f"`python -m wdlib.web build --params <params.yaml>`")
            build(web_cfg)
        retriever = bm25s.BM25.load(out, show_progress=False)
        tokenizer = bm25_tokenizer()
        tokenizer.load_vocab(out)
        web = cls(web_cfg, load_site_pages(web_cfg), retriever, tokenizer, np.load(out / "chunks.npy"),
                  json.loads((out / "meta.json").read_text()), PageRanker(out, retriever))
        if len(web.pages) != web.meta["pages"]:
            raise WebBuildError(f"index {out} is out of date ({web.meta['pages']} pages indexed, "
                                f"{len(web.pages)} on disk): delete it and build again")
        _LOADED[out] = web
        return web

    @classmethod
    def from_folder(cls, folder: Path) -> "LocalWeb":
        """A local web kept in one folder (`pages.jsonl` + `index/`): the search side of an exported snapshot."""
        import bm25s
        import numpy as np

        folder = Path(folder)
        meta = json.loads((folder / "index" / "meta.json").read_text())
        tokenizer = bm25_tokenizer()
        tokenizer.load_vocab(folder / "index")
        with open(folder / "pages.jsonl") as f:
            pages = [Page(**json.loads(line)) for line in f]
        web_cfg = WebParams(sites=meta["sites"], encyclopedia_max_pages=meta.get("encyclopedia_max_pages"))
        retriever = bm25s.BM25.load(folder / "index", show_progress=False)
        return cls(web_cfg, pages, retriever, tokenizer, np.load(folder / "index" / "chunks.npy"), meta,
                   PageRanker(folder / "index", retriever))

    # -- pages
    def lookup(self, url: str) -> Page | None:
        i = self.by_key.get(url_key(url))
        return None if i is None else self.pages[i]

    def knows_host(self, url: str) -> bool:
        return (urlsplit(url).hostname or "").lower().removeprefix("www.").removeprefix("m.") in self.hosts \
            or url_key(url).split("/", 1)[0] in self.hosts

    def html(self, page: Page) -> bytes:
        if page.html is not None:
            return page.html.encode()
        return (self.folders[page.site] / page.file).read_bytes()

    # -- search
    def snippet_terms(self, query: str) -> list[str]:
        """What to look for in a page's text: per query word, the common prefix of the word and its stem
        ('happy'/'happi' -> 'happ'), so inflected forms in the page match too."""
        terms = []
        for word in re.findall(r"\w\w+", query.translate(_ASCII_LOWER)):
            if word in self._stopwords:
                continue
            stem = self._stem(word)
            n = next((i for i, (a, b) in enumerate(zip(word, stem)) if a != b), min(len(word), len(stem)))
            terms.append(word[:max(n, 3)] if n < len(word) else word)
        return list(dict.fromkeys(terms))

    def top_passages(self, query_ids: list[int], n: int):
        """(passage indices, scores), best first. bm25s scores every passage (sparse, ~10 µs); we select the top n
        with argpartition, which skips `retrieve`'s per-call overhead (~0.4 ms) and gives the same ranking."""
        import numpy as np

        scores = self.retriever.get_scores(query_ids)
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        top = top[np.lexsort((top, -scores[top]))]  # by score, ties by position (deterministic)
        return top, scores[top]

    def search(self, query: str, k: int = 10, rank_by: str = "pages") -> list[dict]:
        """Top-k pages as SerpAPI `organic_results` items (position, title, link, displayed_link, snippet).
        rank_by="pages": passages, then page fields (wdlib.ranking); "passages": each page by its best passage."""
        with self._lock:
            ids = self.tokenizer.tokenize([query], update_vocab=False, show_progress=False, return_as="ids")
            terms = self.snippet_terms(query)
        if not any(ids[0]) or not terms:
            return []
        docs, scores = self.top_passages(ids[0], k * 8)  # k*8: enough to find k distinct pages
        if rank_by == "pages" and self.ranker is not None:
            hits = [(page, score, int(docs[pos]))
                    for page, score, pos in self.ranker.rank(ids[0], self.chunks[docs, 0], scores, k,
                                                             lead=self.chunks[docs, 1] == 0)]
        else:
            hits, seen = [], set()
            for doc, score in zip(docs.tolist(), scores.tolist()):
                page = int(self.chunks[doc, 0])
                if score > 0 and page not in seen and len(hits) < k:
                    seen.add(page)
                    hits.append((page, score, doc))
        results = []
        for page_idx, score, doc in hits:
            page = self.pages[page_idx]
            span = (int(self.chunks[doc, 1]), int(self.chunks[doc, 2]))  # the best passage: the snippet's region
            results.append({"position": len(results) + 1, "title": page.title, "link": page.url,
                            "displayed_link": page.url.split("://", 1)[-1],
                            "snippet": snippet(page, terms, span), "score": round(float(score), 4)})
        return results


_LOADED: dict[Path, LocalWeb] = {}


# ---------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    from wdlib.webserver import LocalWebServer

    parser = argparse.ArgumentParser(prog="python -m wdlib.web", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "serve"])
    parser.add_argument("--params", default="smoke.yaml", help="params YAML (its web section is used)")
    parser.add_argument("--port", type=int, default=0, help="serve: port on 127.0.0.1 (0 = a free one)")
    args = parser.parse_args(argv)
    try:
        cfg = params.load(args.params)
        if args.command == "build":
            build(cfg.web)
            return 0
        web = LocalWeb.load(cfg.web)
        with LocalWebServer(web, port=args.port) as srv:
            print(f"[web] serving {len(web.pages)} pages on {srv.base_url} "
                  f"(e.g. {srv.mirror_url(web.pages[0].url)}, {srv.base_url}/search?q=...); Ctrl-C stops", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("[web] stopped")
        return 0
    except (WebBuildError, ParamsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

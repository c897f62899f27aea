"""The local web: corpus build (real Debian doc package + Wikipedia summaries), loopback server, bm25s search."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

from wdlib import config, web, webserver


@pytest.fixture(scope="module")
def local_web(local_web_cfg):
    return web.LocalWeb.load(local_web_cfg.web)


def test_url_key_folds_spellings_of_one_page():
    key = web.url_key("https://docs.python.org/3/library/os.html")
    for spelling in ["http://docs.python.org/3/library/os.html#os.walk", "https://docs.python.org/3.11/library/os.html",
                     "https://www.docs.python.org/3/library/os.html?highlight=walk", "https://docs.python.org/3/library/os"]:
        assert web.url_key(spelling) == key, spelling
    assert web.url_key("https://docs.python.org/3/library/") == web.url_key("https://docs.python.org/3/library/index.html")
    wiki = web.url_key("https://en.wikipedia.org/wiki/Iron_Curtain")
    assert web.url_key("https://en.m.wikipedia.org/wiki/iron%20Curtain") == wiki
    assert web.url_key("https://en.wikipedia.org/wiki/Iron_curtain") != wiki  # titles are case-sensitive after the first letter
    assert web.url_key("https://docs.python.org/3/library/os.path.html") != key


def test_build_reports_sites_and_is_cached(local_web_cfg):
    start = time.time()
    summary = web.build(local_web_cfg.web, quiet=True)
    assert time.time() - start < 5, "a built local web must load from the cache"
    sites = summary["sites"]
    assert set(sites) == set(local_web_cfg.web.sites)
    assert sites["python-docs"]["pages"] > 400 and sites["python-docs"]["links"] > 1000
    assert sites["wikipedia"]["pages"] == local_web_cfg.web.encyclopedia_max_pages
    assert sites["wikipedia"]["links"] > sites["wikipedia"]["pages"]  # the encyclopedia is interlinked
    assert summary["index"]["pages"] == sum(s["pages"] for s in sites.values())


def test_pages_keep_real_urls_and_links_land_on_local_pages(local_web):
    os_page = local_web.lookup("https://docs.python.org/3/library/os.html")
    assert os_page is not None and os_page.title.startswith("os — Miscellaneous operating system interfaces")
    assert "os.path" in os_page.text
    wiki = [p for p in local_web.pages if p.site == "wikipedia"]
    assert all(p.url.startswith("https://en.wikipedia.org/wiki/") and p.title.endswith(" - Wikipedia") for p in wiki)
    linked = [p for p in wiki if p.links]
    assert len(linked) > len(wiki) // 2
    for p in random.Random(0).sample(linked, 20):
        for link in p.links:
            target = local_web.lookup(link)
            assert target is not None and target.url == link and target.url != p.url
            # the link is a real <a href> in the page's HTML, on the words naming the target
            assert f'href="/wiki/{link.rsplit("/wiki/", 1)[1]}"' in local_web.html(p).decode()


def test_server_health_pages_404_and_search_endpoint_share_the_index(local_web):
    with webserver.LocalWebServer(local_web) as srv:
        assert srv.base_url.startswith("http://127.0.0.1:")
        assert srv.httpd.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(srv.base_url + "/health") as r:
            health = json.load(r)
        assert health["status"] == "ok" and health["pages"] == len(local_web.pages)

        url = "https://docs.python.org/3/library/os.path.html"
        with urllib.request.urlopen(srv.mirror_url(url)) as r:
            html = r.read().decode()
            assert r.headers["Content-Type"].startswith("text/html") and r.headers["X-Canonical-URL"] == url
        assert "os.path — Common pathname manipulations" in html

        wiki = "https://en.wikipedia.org/wiki/" + local_web.pages[-1].url.rsplit("/wiki/", 1)[1]
        with urllib.request.urlopen(srv.mirror_url(wiki)) as r:
            assert local_web.pages[-1].title.removesuffix(" - Wikipedia") in r.read().decode()

        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(srv.mirror_url("https://docs.python.org/3/library/no-such-module.html"))
        assert err.value.code == 404

        query = "normalize case of pathname"
        with urllib.request.urlopen(f"{srv.base_url}/search?q={quote(query)}&num=5") as r:
            served = json.load(r)
        assert served["organic_results"] == local_web.search(query, k=5)
        assert served["organic_results"][0]["link"] == url
    with pytest.raises(OSError):  # stopped: the port no longer answers
        urllib.request.urlopen(srv.base_url + "/health", timeout=2)


def _unique_phrases(local_web, n, seed=0):
    """(page, phrase) where the phrase (a whole text line of 8-30 words) occurs in no other page."""
    rng = random.Random(seed)
    out = []
    pages = list(local_web.pages)
    rng.shuffle(pages)
    for page in pages:
        lines = [line for line in page.text.split("\n") if 8 <= len(line.split()) <= 30]
        if not lines:
            continue
        phrase = rng.choice(lines)
        if sum(phrase in p.text for p in local_web.pages) == 1:
            out.append((page, phrase))
        if len(out) == n:
            break
    return out


def test_search_for_a_phrase_ranks_its_page_first(local_web):
    results = local_web.search("Return a normalized absolutized version of the pathname path")
    assert results[0]["link"] == "https://docs.python.org/3/library/os.path.html"

    cases = _unique_phrases(local_web, 30)
    ranks = []
    for page, phrase in cases:
        links = [r["link"] for r in local_web.search(phrase)]
        ranks.append(links.index(page.url) if page.url in links else None)
    assert all(r is not None for r in ranks), "every page is found in the top 10 by one of its own lines"
    assert sum(r == 0 for r in ranks) >= 0.85 * len(ranks), ranks


def test_page_ranking_lifts_the_named_page_and_demotes_link_hubs(local_web):
    from wdlib import ranking
    from wdlib.sites import wiki_url

    # A short query naming an article: its best passage loses to pages that repeat the name, its title does not.
    old = [r["link"] for r in local_web.search("Roman Empire", rank_by="passages")]
    new = [r["link"] for r in local_web.search("Roman Empire")]
    assert old[0] != wiki_url("Roman Empire") and new[0] == wiki_url("Roman Empire")
    hub = {p.url: local_web.ranker.hub[i] for i, p in enumerate(local_web.pages)}
    assert hub["https://docs.python.org/3/contents.html"] < 0.45  # a table of contents: nearly all links
    assert hub["https://docs.python.org/3/library/numeric.html"] < 0.5  # a category index
    assert hub["https://docs.python.org/3/library/os.path.html"] == 1.0
    assert ranking.title_field("zipfile — Work with ZIP archives — Python 3.11.2 documentation",
                               "https://docs.python.org/3/library/zipfile.html") == "zipfile — Work with ZIP archives\nzipfile"
    assert ranking.title_field("Roman Empire - Wikipedia", wiki_url("Roman Empire")) == "Roman Empire\nRoman Empire"


def _ranker(titles, hub):
    import numpy as np

    from wdlib.ranking import PageRanker

    ranker = PageRanker.__new__(PageRanker)  # the fields without an index folder: every term weighs the same
    ranker.titles, ranker.hub, ranker.idf = [frozenset(t) for t in titles], np.array(hub), np.ones(10)
    return ranker


def test_a_link_hub_the_query_names_is_not_demoted():
    import numpy as np

    # page 0: a hub (hub factor 0.4) titled exactly by the query; page 1: an ordinary page with a better passage
    ranker = _ranker([{1, 2}, {5}], [0.4, 1.0])
    ranked = ranker.rank([1, 2], np.array([1, 0]), np.array([1.5, 1.0]), k=2)
    assert [page for page, _, _ in ranked] == [0, 1]
    assert ranker.rank([3], np.array([1, 0]), np.array([1.5, 1.0]), k=2)[1][1] == 0.4  # unnamed: demoted


def test_a_pages_lead_passage_counts_more():
    import numpy as np

    from wdlib import ranking

    ranker = _ranker([{7}, {8}], [1.0, 1.0])
    pages, scores = np.array([1, 0]), np.array([1.1, 1.0])
    assert [p for p, _, _ in ranker.rank([3], pages, scores, k=2)] == [1, 0]
    lead = np.array([False, True])  # page 0's passage is its first: what the page is about
    ranked = ranker.rank([3], pages, scores, k=2, lead=lead)
    assert [p for p, _, _ in ranked] == [0, 1] and ranked[0][1] == 1.0 + ranking.LEAD_BOOST
    assert ranked[0][2] == 1  # the best passage's position, for the snippet


def test_search_results_have_serpapi_fields_and_real_snippets(local_web):
    results = local_web.search("Iron Curtain Cold War Europe", k=10)
    assert 1 <= len(results) <= 10
    assert [r["position"] for r in results] == list(range(1, len(results) + 1))
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        assert set(r) >= {"title", "link", "snippet", "displayed_link"}
        page = local_web.lookup(r["link"])
        snippet = r["snippet"].strip(". ")
        assert 0 < len(snippet) <= 220
        # the snippet is the page's own words around a query term
        assert " ".join(snippet.split()[:4]) in " ".join(page.text.split())
        assert any(t in snippet.lower() for t in ("iron", "curtain", "cold", "war", "europe"))
    assert local_web.search("zzzqqqxxv") == []
    assert local_web.search("the of and") == []  # only stopwords: nothing to rank


def test_cli_build_and_clear_errors(tmp_path, local_web_cfg):
    cached = subprocess.run([sys.executable, "-m", "wdlib.web", "build", "--params", "ci.yaml"],
                            capture_output=True, text=True, cwd=config.REPO_ROOT)
    assert cached.returncode == 0, cached.stderr
    assert "[web] python-docs:" in cached.stdout and "[web] index:" in cached.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: ci.yaml\nweb: {sites: [python-docs, geocities]}\n")
    result = subprocess.run([sys.executable, "-m", "wdlib.web", "build", "--params", str(bad)],
                            capture_output=True, text=True, cwd=config.REPO_ROOT)
    assert result.returncode == 2
    # refused when the params load (issue 18), naming the file, the key and the known sites
    assert f"{bad}: web.sites.1:" in result.stderr and "'geocities'" in result.stderr and "python-docs" in result.stderr

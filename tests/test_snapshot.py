"""Record a live run against a loopback "internet" into a WARC snapshot, replay it with networking disabled; the
local web exported as a snapshot answers like the local web."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import json
import socket
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from loopback import QuietHandler
from pdfs import make_pdf
from wdlib import config, params
from wdlib.agent import run_agent
from wdlib.config import ModelSpec
from wdlib.llm import Reply
from wdlib.snapshot import Snapshot, SnapshotError, redact_url
from wdlib.tools import Toolbox

REPORT_PDF = make_pdf([["Annual report", "The harbour beacon was rebuilt in 1999."]])
SERPAPI_KEY = "serp-key-SHOULD-NOT-BE-RECORDED"
SUMMARIZER_KEY = "sk-summarizer-SHOULD-NOT-BE-RECORDED"
ARTICLE = ("<html><head><title>Harbour</title></head><body><nav>Home | About</nav><article><h1>The harbour</h1>"
           "<p>The lighthouse is 32 metres tall and was automated in 1987. It guards the northern approach to the "
           "harbour and is painted red and white.</p><p>Ferries leave every hour from the southern pier.</p>"
           "<a href='/missing'>Old timetable</a></article></body></html>")
LATIN1 = ("<html><head><title>Caf\u00e9</title></head><body><article><p>The Caf\u00e9 M\u00fcller on the quay "
          "serves cr\u00e8me br\u00fbl\u00e9e; it opened in 1921 and seats forty guests by the harbour wall.</p>"
          "</article></body></html>")


class _Internet(QuietHandler):
    """A small web: redirects, a PDF, a slow page, a stalled page, a 404, a Latin-1 page, a gzip page, a big page,
    plain text, and SerpAPI's /search endpoint answering with links into this web."""

    hits: dict = {}

    def do_GET(self):
        path = urlsplit(self.path).path
        self.hits[path] = self.hits.get(path, 0) + 1
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        if path == "/search":
            params = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            if params.get("api_key") != SERPAPI_KEY:
                return self._send(401, b'{"error": "Invalid API key."}', "application/json")
            results = [{"position": i + 1, "title": t, "link": base + p, "snippet": f"About the {t.lower()}."}
                       for i, (t, p) in enumerate([("Harbour", "/start"), ("Cafe", "/latin1.html"),
                                                   ("Report", "/paper.pdf")])]
            data = {"search_metadata": {"status": "Success", "json_endpoint": f"{base}/x.json?api_key={SERPAPI_KEY}"},
                    "search_parameters": {"engine": "google", "q": params.get("q")}, "organic_results": results}
            return self._send(200, json.dumps(data).encode(), "application/json")
        if path == "/start":
            return self._send(302, b"", headers={"Location": "/hop"})
        if path == "/hop":
            return self._send(301, b"moved", headers={"Location": f"{base}/article.html"})
        if path == "/article.html":
            return self._send(200, ARTICLE.encode())
        if path == "/paper.pdf":
            return self._send(200, REPORT_PDF, "application/pdf")
        if path == "/slow.html":
            time.sleep(0.4)
            return self._send(200, ARTICLE.replace("32 metres", "thirty-two metres").encode())
        if path == "/stall.html":
            time.sleep(3)
            return self._send(200, ARTICLE.encode())
        if path == "/latin1.html":
            return self._send(200, LATIN1.encode("latin-1"), "text/html; charset=iso-8859-1")
        if path == "/gzip.html":
            return self._send(200, gzip.compress(ARTICLE.replace("harbour", "port").encode()),
                              headers={"Content-Encoding": "gzip"})
        if path == "/big.html":
            return self._send(200, ARTICLE.encode() + b"<p>" + b"lorem ipsum " * 20_000 + b"</p>")
        if path == "/notes.txt":
            return self._send(200, b"Tide tables: high water at 06:12 and 18:40.", "text/plain")
        return self._send(404, b"not found", "text/plain")


@pytest.fixture()
def internet():
    handler = type("H", (_Internet,), {"hits": {}})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()
    srv.server_close()


class ScriptedPolicy:
    """The agent's model: a fixed list of turns (in process, so replay needs no network for it either)."""

    model_name, max_new_tokens = "scripted", 256

    def __init__(self, turns: list[str]):
        self.turns = turns

    async def chat(self, messages, **sampling):
        return Reply(text=self.turns[sum(m["role"] == "assistant" for m in messages)])


def _call(name: str, **arguments) -> str:
    return f"<think>next</think>\n<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def _summarizer_handler(body):
    from openai_loopback import completion

    page = body["messages"][0]["content"].split("## **Webpage Content**\n", 1)[1].split("\n\n## **User Goal**")[0]
    evidence = " ".join(page.split()[:25])
    return 200, completion(json.dumps({"rational": "r", "evidence": evidence, "summary": f"{len(page)} chars"}))


def _cfg(base: str, snapshot: Path, mode: str, summarizer_url: str) -> config.Config:
    cfg = params.load("ci.yaml")
    cfg.web.mode, cfg.web.snapshot, cfg.web.search_backend = mode, str(snapshot), "serpapi"
    cfg.web.live_allow_private, cfg.web.live_timeout_s, cfg.web.live_max_bytes = True, 1.5, 60_000
    cfg.models.summarizer = ModelSpec(name="summ", backend="openai", base_url=summarizer_url,
                                      api_key_env="TEST_SUMMARIZER_KEY", context_length=4096, max_new_tokens=128)
    return cfg


def _episode(base: str) -> list[str]:
    return [_call("search", query=["harbour lighthouse", "harbour cafe"]),
            _call("visit", url=[f"{base}/start", f"{base}/paper.pdf", f"{base}/slow.html", f"{base}/missing"],
                  goal="How tall is the lighthouse?"),
            _call("visit", url=[f"{base}/latin1.html", f"{base}/gzip.html", f"{base}/big.html", f"{base}/notes.txt",
                                f"{base}/stall.html"], goal="When did the cafe open?"),
            _call("visit", url=[f"{base}/start?token=abc#top"], goal="Again: how tall?"),
            "<think>done</think>\n<answer>32 metres</answer>"]


def _run(cfg, turns):
    async def go():
        with Toolbox.from_config(cfg) as tb:
            traj = await run_agent("How tall is the lighthouse?", ScriptedPolicy(turns), tb, max_turns=8)
            return traj, dict(tb.stats)
    return asyncio.run(go())


def test_record_live_run_then_replay_offline_byte_for_byte(internet, tmp_path, monkeypatch):
    from openai_loopback import LoopbackOpenAI

    import serpapi

    base, handler = internet
    snap_dir = tmp_path / "snap"
    monkeypatch.setattr(serpapi.Client, "BASE_DOMAIN", base)
    monkeypatch.setenv("SERPAPI_API_KEY", SERPAPI_KEY)
    monkeypatch.setenv("TEST_SUMMARIZER_KEY", SUMMARIZER_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("WDLIB_CACHE", str(tmp_path / "cache"))  # SerpAPI's own disk cache starts empty
    with LoopbackOpenAI(_summarizer_handler) as summarizer:
        cfg = _cfg(base, snap_dir, "live", summarizer.base_url)
        recorded, rec_stats = _run(cfg, _episode(base))
        llm_requests = len(summarizer.requests)
    obs = [m["content"] for m in recorded.messages if m["role"] == "user"][1:]
    assert recorded.finish_reason == "answer" and len(obs) == 4
    assert "32 metres tall" in obs[1] and "harbour beacon" in obs[1]  # the PDF's text, read
    assert "HTTP 404" in obs[1] and "The Caf\u00e9 M\u00fcller" in obs[2] and "ReadTimeout" in obs[2]
    assert "Tide tables" in obs[2] and "lighthouse is 32 metres" in obs[2]  # the gzip page, decoded
    assert handler.hits["/start"] == 1 and handler.hits["/article.html"] == 1  # the second visit: from the snapshot
    assert llm_requests > 0 and rec_stats["snapshot_misses"] == 0

    manifest = json.loads((snap_dir / "manifest.json").read_text())
    session = manifest["sessions"][0]
    assert session["backends"]["search"] == "serpapi" and session["models"]["summarizer"] == "openai:summ"
    assert session["counts"]["searches"] == 2 and session["counts"]["llm_calls"] == llm_requests
    assert manifest["counts"]["fetch_errors"] == 1 and manifest["counts"]["responses"] >= 10
    everything = b"".join(p.read_bytes() for p in snap_dir.rglob("*") if p.is_file())
    everything += b"".join(gzip.decompress(p.read_bytes()) for p in snap_dir.rglob("*.warc.gz"))
    assert SERPAPI_KEY.encode() not in everything and SUMMARIZER_KEY.encode() not in everything
    assert b"token=abc" not in everything
    # a standard WARC: warcio's checker verifies every record's digests; the redirect chain is there hop by hop
    from types import SimpleNamespace

    from warcio.archiveiterator import ArchiveIterator
    from warcio.checker import Checker

    warcs = sorted(str(p) for p in (snap_dir / "warc").glob("*.warc.gz"))
    assert Checker(SimpleNamespace(inputs=warcs, verbose=False)).process_all() == 0
    with open(warcs[0], "rb") as f:
        hops = {r.rec_headers.get_header("WARC-Target-URI"): (r.http_headers.get_statuscode(),
                                                              r.http_headers.get_header("Location"))
                for r in ArchiveIterator(f) if r.rec_type == "response"}
    assert hops[f"{base}/start"] == ("302", "/hop") and hops[f"{base}/hop"] == ("301", f"{base}/article.html")
    assert hops[f"{base}/article.html"] == ("200", None)

    # Replay: no keys, no network at all.
    monkeypatch.delenv("SERPAPI_API_KEY")
    monkeypatch.delenv("TEST_SUMMARIZER_KEY")
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    cfg = _cfg(base, snap_dir, "replay", "http://127.0.0.1:9/v1")
    hits = dict(handler.hits)
    replayed, stats = _run(cfg, _episode(base))
    assert attempts == [] and stats["snapshot_misses"] == 0 and stats["snapshot_hits"] > 10
    assert handler.hits == hits  # the loopback internet saw nothing (it is still up)
    assert replayed.messages == recorded.messages  # every observation, byte for byte
    assert json.loads((snap_dir / "manifest.json").read_text()) == manifest  # replay writes nothing


def test_replay_misses_are_clear_observations_and_counted(internet, tmp_path, monkeypatch):
    base, _ = internet
    cfg = params.load("ci.yaml")
    cfg.web.mode, cfg.web.snapshot, cfg.web.live_allow_private = "live", str(tmp_path / "s"), True
    cfg.web.search_backend = "serpapi"
    monkeypatch.setenv("SERPAPI_API_KEY", SERPAPI_KEY)
    import serpapi

    monkeypatch.setattr(serpapi.Client, "BASE_DOMAIN", base)
    monkeypatch.setenv("WDLIB_CACHE", str(tmp_path / "cache"))
    with Toolbox.from_config(cfg) as tb:
        asyncio.run(tb.visit(f"{base}/article.html", "tall?"))
        asyncio.run(tb.search(["harbour"]))
    cfg.web.mode = "replay"
    with Toolbox.from_config(cfg) as tb:
        assert "32 metres" in asyncio.run(tb.visit(f"{base}/article.html", "tall?"))
        miss = asyncio.run(tb.visit(f"{base}/never-visited.html", "anything"))
        assert f"NotInSnapshot: {base}/never-visited.html is not in the snapshot" in miss
        assert "is not in the snapshot" in asyncio.run(tb.search(["a query never made"]))
        assert tb.stats["snapshot_misses"] == 2 and tb.stats["snapshot_hits"] == 1


def test_refused_addresses_replay_without_resolving(tmp_path, monkeypatch):
    cfg = params.load("ci.yaml")
    cfg.web.mode, cfg.web.snapshot = "live", str(tmp_path / "s")
    with Toolbox.from_config(cfg) as tb:
        live = asyncio.run(tb.visit("http://10.1.2.3/admin", "x"))
    assert "private or loopback" in live
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("replay resolved a host name"))
    cfg.web.mode = "replay"
    with Toolbox.from_config(cfg) as tb:
        assert asyncio.run(tb.visit("http://10.1.2.3/admin", "x")) == live


def test_bad_settings_are_clear_errors(tmp_path):
    cfg = params.load("ci.yaml")
    cfg.web.mode = "replay"
    with pytest.raises(SnapshotError, match="needs web.snapshot"):
        Toolbox.from_config(cfg).open()
    cfg.web.snapshot = str(tmp_path / "empty")
    with pytest.raises(SnapshotError, match="is not a snapshot"):
        Toolbox.from_config(cfg).open()
    cfg.web.mode = "local"
    with pytest.raises(SnapshotError, match="export"):
        Toolbox(cfg.web).open()


def test_urls_and_cached_answers_never_keep_keys(tmp_path):
    assert redact_url("https://serpapi.com/search.json?engine=google&q=a+b&api_key=K#x") == \
        "https://serpapi.com/search.json?engine=google&q=a+b"
    snap = Snapshot(tmp_path / "s", "record")
    snap.cache_put("search", {"q": "x"}, {"results": [], "raw": {"api_key": "SECRET1", "meta": {
        "url": "https://h/p?token=SECRET2&a=1#frag", "links": ["https://h/q?apikey=SECRET3"]}}})
    stored = json.loads(next((tmp_path / "s" / "cache" / "search").rglob("*.json")).read_text())
    assert "SECRET" not in json.dumps(stored)
    assert stored["raw"]["meta"] == {"url": "https://h/p?a=1#frag", "links": ["https://h/q"]}
    assert snap.cache_get("search", {"q": "x"})["results"] == []  # content-addressed: the same key finds it


def test_exported_local_web_replays_like_the_local_web(local_web_cfg, tmp_path, monkeypatch, capsys):
    from wdlib.snapshot import export_local_web

    out = tmp_path / "localweb"
    manifest = export_local_web(local_web_cfg, out, limit=40, progress=False)
    assert manifest["url_folding"] == "local-web" and manifest["counts"]["responses"] == 40
    with pytest.raises(SnapshotError, match="already holds"):
        export_local_web(local_web_cfg, out, limit=1, progress=False)
    from wdlib import snapshot

    assert snapshot.main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"]["responses"] == 40 and info["counts"]["conversions"] == 40
    assert snapshot.main(["info", str(tmp_path / "nothing")]) == 2 and "is not a snapshot" in capsys.readouterr().err
    cfg = local_web_cfg.model_copy(deep=True)
    cfg.web.mode, cfg.web.snapshot = "replay", str(out)
    with Toolbox.from_config(local_web_cfg) as local, Toolbox.from_config(cfg) as replay:
        pages = [p.url for p in local.web.pages[:40:8]]
        for query in (["os.path join absolute"], ["Iron Curtain", "capital city of Burkina Faso"]):
            assert asyncio.run(replay.search(query)) == asyncio.run(local.search(query))
        for url in pages + [pages[0] + "#section"]:
            goal = "what is this page about"
            assert asyncio.run(replay.visit(url, goal)) == asyncio.run(local.visit(url, goal))
        for parser in ("wdlib.extract.parse_page", "wdlib.extract.ParsePool.run"):  # in process or in a worker
            monkeypatch.setattr(parser, lambda *a, **k: pytest.fail("replay re-extracted a page"))
        asyncio.run(replay.visit(pages[1], "again"))
        assert replay.stats["snapshot_misses"] == 0 and replay.web is None and replay.server is None

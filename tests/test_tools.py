"""search and visit against the running loopback web; SerpAPI from recorded JSON; live-mode guards; summarizer path."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from loopback import QuietHandler
from pdfs import make_pdf
from wdlib import pdf, tools
from wdlib.evidence import extractive_evidence, parse_evidence_json
from wdlib.extract import extract_text
from wdlib.search import SerpApiSearch
from wdlib.tools import Toolbox

DATA = Path(__file__).parent / "data"
SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "webdancer-samples" / "sample_traj.jsonl"

# The structure of one query's observation in WebDancer's released trajectories.
SEARCH_BLOCK = re.compile(r"A Google search for '(?P<q>.*)' found (?P<n>\d+) results:\n\n## Web Results\n"
                          r"(?P<items>1\. \[.*)", re.S)
# "N. [title](link)", an optional date line, then a blank line and the snippet (WebDancer leaves it empty if none)
SEARCH_ITEM = re.compile(r"^(\d+)\. \[(.*)\]\((\S+)\)(?:\nDate published: .*)?\n(?:\n(.*))?$", re.M)
VISIT_BLOCK = re.compile(r"^The useful information in (?P<url>\S+) for user goal (?P<goal>.*) as follows: \n\n"
                         r"Evidence in page: \n(?P<evidence>.*)\n\nSummary: \n(?P<summary>.*)$", re.S)


def run(coro):
    return asyncio.run(coro)


def check_search_shape(observation: str, queries: list[str]) -> list[list[tuple]]:
    """Parse a search observation the way WebDancer's are shaped; returns the items per query."""
    assert observation.endswith("\n") and not observation.endswith("\n\n")
    blocks = observation[:-1].split("\n=======\n")
    assert len(blocks) == len(queries)
    out = []
    for block, q in zip(blocks, queries):
        m = SEARCH_BLOCK.fullmatch(block)
        assert m, block[:300]
        assert m["q"] == q
        items = SEARCH_ITEM.findall(m["items"])
        assert [int(i[0]) for i in items] == list(range(1, int(m["n"]) + 1))
        out.append(items)
    return out


# ---------------------------------------------------------------- shapes
def test_webdancer_samples_match_our_shape_patterns():
    """Guard the patterns themselves: they accept the released trajectories' real observations."""
    checked = {"search": 0, "visit": 0}
    with open(SAMPLES) as f:
        for line in f:
            for m in json.loads(line)["messages"]:
                c = m["content"]
                if not c.startswith("<tool_response>\n"):
                    continue
                body = c[len("<tool_response>\n"):-len("\n</tool_response>")]
                if body.startswith("A Google search"):
                    queries = re.findall(r"A Google search for '(.*?)' found", body)
                    check_search_shape(body, queries)
                    checked["search"] += 1
                elif body.startswith("The useful information"):
                    for part in body[:-1].split("\n=======\n"):
                        assert VISIT_BLOCK.match(part), part[:200]
                    checked["visit"] += 1
    assert checked["search"] > 20 and checked["visit"] > 5


def test_schemas_and_required_args():
    assert tools.TOOL_NAMES == ("search", "visit")
    assert tools.REQUIRED_ARGS == {"search": ("query",), "visit": ("url", "goal")}


# ---------------------------------------------------------------- local search and visit
def test_search_finds_the_page_of_a_phrase_in_webdancer_shape(toolbox):
    phrase = "Return a normalized absolutized version of the pathname path"
    obs = run(toolbox.call("search", {"query": [phrase, "Iron Curtain Cold War"]}))
    first, second = check_search_shape(obs, [phrase, "Iron Curtain Cold War"])
    assert first[0][2] == "https://docs.python.org/3/library/os.path.html"
    assert "absolutized" in first[0][3]  # the snippet is cut around the matched words
    assert len(first) == toolbox.cfg.top_k
    assert any("wikipedia.org/wiki/" in item[2] for item in second)


def test_search_argument_forms_and_limits(toolbox):
    assert check_search_shape(run(toolbox.call("search", {"query": "asyncio gather"})), ["asyncio gather"])
    many = [f"python module {i}" for i in range(9)]
    obs = run(toolbox.call("search", json.dumps({"query": many})))  # JSON-string arguments are accepted
    assert obs.count("A Google search for") == toolbox.cfg.max_queries_per_call
    none = run(toolbox.search(["qqqzzzxxyy"]))
    assert none == "No results found for 'qqqzzzxxyy'. Try with a more general query.\n"


def test_visit_returns_evidence_with_the_phrase(toolbox):
    url = "https://docs.python.org/3/library/os.path.html"
    goal = "What does os.path.join do when a segment is an absolute path?"
    obs = run(toolbox.call("visit", {"url": [url], "goal": goal}))
    m = VISIT_BLOCK.match(obs[:-1])
    assert m and m["url"] == url and m["goal"] == goal
    assert "all previous segments are ignored" in m["evidence"]
    assert len(m["evidence"].split()) <= toolbox.cfg.visit_evidence_tokens  # the extractive budget holds
    assert m["summary"].strip() and m["summary"] != tools.NO_CONTENT_SUMMARY


def test_concurrent_visits_of_one_page_parse_it_once(toolbox):
    url = "https://docs.python.org/3/library/shutil.html"
    toolbox._parsed.pop(url, None)
    parses = toolbox._parse_pool().stats["tasks"]  # pages go to the parser processes one task each

    async def group():  # what a DAPO group does: every rollout visits the same page at once
        return await asyncio.gather(*(toolbox.visit(url, goal) for goal in ("copy a file", "move a tree") * 3))

    observations = run(group())
    assert toolbox._parse_pool().stats["tasks"] == parses + 1  # one parse, shared by the six visits
    assert all("copy" in o.lower() for o in observations) and not toolbox._parsing
    run(toolbox.visit(url, "copy a file"))
    assert toolbox._parse_pool().stats["tasks"] == parses + 1  # and remembered afterwards


def test_extractions_on_worker_threads_run_one_at_a_time(monkeypatch):
    """trafilatura shares lxml XPath objects between calls: two at once on two threads corrupted the heap."""
    import concurrent.futures

    import trafilatura

    real, active, peak = trafilatura.extract, [0], [0]

    def watched(*args, **kwargs):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        time.sleep(0.02)  # long enough for the other threads to arrive
        try:
            return real(*args, **kwargs)
        finally:
            active[0] -= 1

    monkeypatch.setattr(trafilatura, "extract", watched)
    page = "<html><body><article>" + "<p>Some sentence about extraction and threads.</p>" * 20 + "</article></body></html>"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda _: extract_text(page, "https://example.org/"), range(16)))
    assert peak[0] == 1 and all("extraction and threads" in t for t in texts)


def test_visit_unknown_url_and_404_are_observations(toolbox):
    unknown = "https://www.example.com/some/page"
    missing = "https://docs.python.org/3/library/no-such-module.html"
    obs = run(toolbox.call("visit", {"url": [unknown, missing, "file:///etc/passwd"], "goal": "anything"}))
    parts = obs[:-1].split("\n=======\n")
    assert len(parts) == 3
    assert "not in the local web" in parts[0] and tools.NO_CONTENT_SUMMARY in parts[0]
    assert "HTTP 404" in parts[1]
    assert "only http(s) URLs" in parts[2] and "root:" not in parts[2]


def test_call_never_raises_on_bad_calls(toolbox):
    assert run(toolbox.call("browse", {"url": "x"})).startswith("Error: unknown tool 'browse'")
    assert "needs the argument(s) 'goal'" in run(toolbox.call("visit", {"url": "https://docs.python.org/3/"}))
    assert "not valid JSON" in run(toolbox.call("search", "{query: [oops"))
    assert "must be a JSON object" in run(toolbox.call("search", "[1, 2]"))
    assert run(toolbox.call("search", {"query": ["  "]})).startswith("Error: search needs")


def test_fetch_for_crawlers_gives_text_and_real_links(toolbox):
    page = run(toolbox.fetch("https://docs.python.org/3/library/os.path.html#os.path.join"))
    assert page.ok and page.status == 200 and page.content_type.startswith("text/html")
    assert page.url == "https://docs.python.org/3/library/os.path.html"
    assert "os.path" in page.text and "<html" in page.html.lower()
    assert "https://docs.python.org/3/library/os.html" in page.links  # relative links resolved to real URLs
    assert not any("127.0.0.1" in link for link in page.links)
    wiki = next(p for p in toolbox.web.pages if p.site == "wikipedia" and p.links)
    fetched = run(toolbox.fetch(wiki.url))
    assert set(wiki.links) <= set(fetched.links)
    gone = run(toolbox.fetch("https://docs.python.org/3/nope.html"))
    assert not gone.ok and gone.status == 404


def test_both_extractors_recover_the_main_text(toolbox):
    page = next(p for p in toolbox.web.pages if p.site == "wikipedia" and len(p.text) > 400)
    html = toolbox.web.html(page).decode()
    for extractor in ("trafilatura", "newspaper"):
        text = extract_text(html, page.url, extractor)
        assert page.text.split("\n")[0][:120] in text, extractor
        assert "Creative Commons" not in text  # boilerplate (footer) is not main text
    with pytest.raises(ValueError):
        extract_text(html, page.url, "readability")


def test_extractive_evidence_ranks_passages_against_the_goal():
    text = "\n".join([
        "The harbour was built in 1820 by the town council.",
        "Fishing boats use the northern quay; ferries leave from the southern pier every hour.",
        "The lighthouse, painted red and white, is 32 metres tall and was automated in 1987.",
        "A museum on the quay tells the story of the town's whaling fleet.",
    ] * 3)
    evidence, summary = extractive_evidence(text, "How tall is the lighthouse?", budget_tokens=40)
    assert "32 metres tall" in evidence and "32 metres tall" in summary
    assert len(evidence.split()) <= 30


# ---------------------------------------------------------------- summarizer (a loopback OpenAI-API server)
def test_parse_evidence_json_is_robust():
    want = {"rational": "r", "evidence": "e", "summary": "s"}
    assert parse_evidence_json('{"rational": "r", "evidence": "e", "summary": "s"}') == want
    assert parse_evidence_json('Sure!\n```json\n{"rationale": "r", "evidence": "e", "summary": "s"}\n```\nDone.') == want
    assert parse_evidence_json('<think>hmm {not json}</think> {"rational": "r", "evidence": ["e"], "summary": "s"} ok') \
        == want
    assert parse_evidence_json('{"rational": "r", "evidence": "he said "hi"", "summary": "s"}')["summary"] == "s"
    assert parse_evidence_json("I cannot help with that.") is None
    assert parse_evidence_json('{"evidence": "", "summary": ""}') is None


def test_visit_with_a_summarizer_retries_shorter_then_falls_back(local_web_cfg):
    from openai_loopback import LoopbackOpenAI, completion

    from wdlib.llm import OpenAIClient

    replies = []

    def handler(body):
        prompt = body["messages"][0]["content"]
        replies.append(len(prompt))
        if "User Goal**\nwhen did the lighthouse open" in prompt:
            return 200, completion("no json here")  # never usable: retries, then the extractive path
        if len(replies) == 1:
            return 500, {"error": {"message": "context length exceeded"}}  # first try fails: retried shorter
        return 200, completion('```json\n{"rational": "the page defines join", "evidence": "EVIDENCE-FROM-MODEL", '
                               '"summary": "SUMMARY-FROM-MODEL"}\n```')

    with LoopbackOpenAI(handler) as server:
        client = OpenAIClient("loopback", base_url=server.base_url, max_retries=0, timeout_s=10)
        cfg = local_web_cfg.model_copy(deep=True)
        with Toolbox(cfg.web, summarizer=client, summarizer_chars=6000) as tb:
            url = "https://docs.python.org/3/library/os.path.html"
            obs = run(tb.visit(url, "what join does"))
            assert "Evidence in page: \nEVIDENCE-FROM-MODEL\n\nSummary: \nSUMMARY-FROM-MODEL" in obs
            assert len(replies) == 2 and replies[1] < replies[0]  # the retry sent a shorter page
            replies.clear()
            obs = run(tb.visit(url, "when did the lighthouse open"))
            assert len(replies) >= 2 and tb.stats["summarizer_fallbacks"] == 1
            assert VISIT_BLOCK.match(obs[:-1]) and "EVIDENCE-FROM-MODEL" not in obs


def test_from_config_builds_the_configured_summarizer(local_web_cfg):
    """params `models.summarizer` (an OpenAI-compatible endpoint) is what visit uses, with no extra wiring."""
    from openai_loopback import LoopbackOpenAI, completion

    from wdlib.config import ModelSpec

    seen = []

    def handler(body):
        seen.append(body["model"])
        return 200, completion('{"rational": "r", "evidence": "EVIDENCE-VIA-PARAMS", "summary": "S"}')

    with LoopbackOpenAI(handler) as server:
        cfg = local_web_cfg.model_copy(deep=True)
        cfg.models.summarizer = ModelSpec(name="summ-model", backend="openai", base_url=server.base_url,
                                          context_length=4096, max_new_tokens=256)
        with Toolbox.from_config(cfg) as tb:
            assert tb.summarizer_chars < cfg.web.visit_max_page_chars  # page budget follows the model's context
            obs = run(tb.visit("https://docs.python.org/3/library/os.path.html", "what join does"))
    assert seen == ["summ-model"] and "EVIDENCE-VIA-PARAMS" in obs


# ---------------------------------------------------------------- SerpAPI (recorded responses, real client)
class _Recorded(http.server.BaseHTTPRequestHandler):
    responses: dict = {}
    seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        params = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        self.seen.append((urlsplit(self.path).path, params))
        if params.get("api_key") != "test-key":
            body, status = {"error": "Invalid API key."}, 401
        else:
            body, status = self.responses.get(params.get("q"), ({"error": "boom"}, 500))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def serpapi_server():
    recorded = json.loads((DATA / "serpapi_google_iron_curtain.json").read_text())
    empty = json.loads((DATA / "serpapi_google_no_results.json").read_text())
    handler = type("H", (_Recorded,), {"seen": [], "responses": {
        recorded["query"]: (recorded["response"], 200),
        empty["search_parameters"]["q"]: (empty, 200)}})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler, recorded, empty
    srv.shutdown()
    srv.server_close()


def test_serpapi_backend_renders_recorded_json_like_webdancer(local_web_cfg, serpapi_server, tmp_path, monkeypatch):
    base, handler, recorded, empty = serpapi_server
    monkeypatch.setenv("SERPAPI_API_KEY", "test-key")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    backend = SerpApiSearch(tmp_path / "cache", base_domain=base)
    cfg = local_web_cfg.model_copy(deep=True)
    with Toolbox(cfg.web, search_backend=backend) as tb:
        obs = run(tb.call("search", {"query": [recorded["query"]]}))
        # identical to the observation WebDancer's agent saw for the same Google results
        assert obs == recorded["webdancer_observation"]
        check_search_shape(obs, [recorded["query"]])
        path, params = handler.seen[0]
        assert path == "/search" and params["engine"] == "google" and params["q"] == recorded["query"]
        assert params["num"] == str(backend.top_k) == "10"  # the backend asks for as many results as it renders

        again = run(tb.search([recorded["query"]]))  # from the disk cache: no request
        assert again == obs and len(handler.seen) == 1 and backend.requests == 1

        nothing = run(tb.search([empty["search_parameters"]["q"]]))
        assert nothing.startswith("No results found for")

        monkeypatch.setenv("SERPAPI_API_KEY", "wrong-key")
        failed = run(tb.call("search", {"query": ["a query not in the cache"]}))
        assert "failed" in failed and "HTTP 401" in failed and "wrong-key" not in failed

        monkeypatch.delenv("SERPAPI_API_KEY")
        missing = run(tb.call("search", {"query": ["another uncached query"]}))
        assert "SERPAPI_API_KEY" in missing

    with Toolbox(cfg.web) as local:  # the local backend renders through the same function
        check_search_shape(run(local.search(["Iron Curtain"])), ["Iron Curtain"])


# ---------------------------------------------------------------- live mode guards (loopback, allowed explicitly)
PAPER_PDF = make_pdf([["Attention Is All You Need", "We propose the Transformer, based solely on attention."],
                      ["Results", "The big model reaches 28.4 BLEU on the WMT 2014 English-to-German task."]])
LONG_PDF = make_pdf([[f"Page {i} of a long report. " + "Filler text about harbours. " * 6] for i in range(40)])


class _LiveSite(QuietHandler):
    def do_GET(self):
        page = (b"<html><head><title>Harbour</title></head><body><nav>Home | About</nav><article>"
                b"<h1>The harbour</h1><p>The lighthouse is 32 metres tall and was automated in 1987. It guards the "
                b"northern approach to the harbour and is painted red and white.</p><p>Ferries leave every hour "
                b"from the southern pier.</p><a href='/other.html'>Other</a></article></body></html>")
        if self.path == "/page.html":
            self._send(200, page)
        elif self.path == "/redirect":
            self._send(302, b"", headers={"Location": "/page.html"})
        elif self.path == "/to-file":
            self._send(302, b"", headers={"Location": "file:///etc/passwd"})
        elif self.path == "/doc.pdf":
            self._send(200, PAPER_PDF, "application/pdf")
        elif self.path == "/download":  # a PDF sent as a generic binary file
            self._send(200, PAPER_PDF, "application/octet-stream")
        elif self.path == "/long.pdf":
            self._send(200, LONG_PDF, "application/pdf")
        elif self.path == "/broken.pdf":
            self._send(200, b"%PDF-1.4 this is not really a PDF", "application/pdf")
        elif self.path == "/blob":
            self._send(200, b"\x00\x01binary", "application/octet-stream")
        elif self.path == "/image.png":
            self._send(200, b"\x89PNG...", "image/png")
        elif self.path == "/big.html":
            self._send(200, page + b"<p>" + b"x" * 300_000 + b"</p>")
        elif self.path == "/slow.html":
            time.sleep(2)
            self._send(200, page)
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture()
def live_site():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LiveSite)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _live_toolbox(local_web_cfg, **web):
    cfg = local_web_cfg.model_copy(deep=True)
    cfg.web.mode = "live"
    for k, v in web.items():
        setattr(cfg.web, k, v)
    return Toolbox.from_config(cfg)


def test_live_mode_refuses_loopback_private_and_file_urls(local_web_cfg, live_site):
    with _live_toolbox(local_web_cfg) as tb:
        assert tb.server is None  # live mode serves nothing
        for url in (live_site + "/page.html", "http://localhost/", "http://10.1.2.3/", "http://[::1]/x",
                    "http://169.254.169.254/latest/meta-data/"):
            page = run(tb.fetch(url))
            assert not page.ok and "private or loopback" in page.error, url
        assert "only http(s)" in run(tb.fetch("file:///etc/passwd")).error
        obs = run(tb.visit("file:///etc/passwd", "read it"))
        assert tools.NO_CONTENT_SUMMARY in obs and "root:" not in obs


def test_live_fetch_checks_type_size_timeout_and_redirects(local_web_cfg, live_site):
    with _live_toolbox(local_web_cfg, live_allow_private=True, live_max_bytes=50_000, live_timeout_s=0.5) as tb:
        page = run(tb.fetch(live_site + "/redirect"))
        assert page.ok and page.url == live_site + "/page.html" and "32 metres tall" in page.text
        assert "Home | About" not in page.text  # the extractor drops navigation
        assert live_site + "/other.html" in page.links
        obs = run(tb.visit(live_site + "/page.html", "How tall is the lighthouse?"))
        assert "32 metres tall" in obs
        assert "unsupported content type 'image/png'" in run(tb.fetch(live_site + "/image.png")).error
        big = run(tb.fetch(live_site + "/big.html"))
        assert big.truncated and len(big.html.encode()) <= 50_000
        slow = run(tb.fetch(live_site + "/slow.html"))
        assert not slow.ok and "Timeout" in slow.error
        assert "only http(s)" in run(tb.fetch(live_site + "/to-file")).error
        assert run(tb.fetch(live_site + "/missing")).status == 404


# ---------------------------------------------------------------- PDFs
def test_pdf_text_reads_pages_until_the_budget():
    text = pdf.pdf_text(PAPER_PDF, 10_000)
    assert "Attention Is All You Need" in text and "28.4 BLEU on the WMT 2014" in text
    assert text.index("Transformer") < text.index("Results")  # page order kept
    assert len(pdf.pdf_text(LONG_PDF, 500)) == 500  # stops early: what visit can use at most
    with pytest.raises(Exception):
        pdf.pdf_text(b"%PDF-1.4 not a pdf", 100)


def test_visit_reads_a_pdf_served_live(local_web_cfg, live_site):
    with _live_toolbox(local_web_cfg, live_allow_private=True, live_max_bytes=50_000, live_timeout_s=5) as tb:
        page = run(tb.fetch(live_site + "/doc.pdf"))
        assert page.ok and page.content_type == "application/pdf" and "28.4 BLEU" in page.text
        assert run(tb.fetch(live_site + "/download")).text == page.text  # a PDF labelled as a binary download
        obs = run(tb.visit(live_site + "/doc.pdf", "What BLEU score does the big model reach?"))
        assert "28.4 BLEU" in obs and tools.NO_CONTENT_SUMMARY not in obs
        assert "could not be read" in run(tb.fetch(live_site + "/broken.pdf")).error
        assert "not a PDF" in run(tb.fetch(live_site + "/blob")).error
    # the same byte cap as web pages: a PDF cut at the cap cannot be read, and says so
    with _live_toolbox(local_web_cfg, live_allow_private=True, live_max_bytes=2_000) as tb:
        cut = run(tb.fetch(live_site + "/long.pdf"))
        assert cut.truncated and not cut.ok and "larger than the 2,000-byte limit" in cut.error
        assert "larger than" in run(tb.visit(live_site + "/long.pdf", "what is it about"))


def test_visit_reads_a_pdf_of_the_local_web():
    """Local mode through the real loopback mirror server: a local page that is a PDF document is served as one and
    visit reads its text (the offline web's sites are HTML today; snapshots of papers are PDFs)."""
    from types import SimpleNamespace

    from wdlib.config import WebParams
    from wdlib.webserver import LocalWebServer

    url = "https://arxiv.org/pdf/1706.03762"
    pdf_page = SimpleNamespace(url=url, base_url=None, content_type="application/pdf")

    class PdfWeb:  # the parts of wdlib.web.LocalWeb the server and the toolbox use
        hosts, pages, cfg = {"arxiv.org"}, [pdf_page], SimpleNamespace(sites=["papers"])

        def lookup(self, u):
            return pdf_page if u.rstrip("/") == url else None

        def knows_host(self, u):
            return "arxiv.org" in u

        def html(self, page):
            return PAPER_PDF

    cfg = WebParams(mode="local", search_backend="local")
    with LocalWebServer(PdfWeb()) as server:
        tb = Toolbox(cfg, search_backend=object())
        tb.web, tb.server = PdfWeb(), server
        page = run(tb.fetch(url))
        assert page.ok and page.content_type == "application/pdf" and "Transformer" in page.text
        assert "28.4 BLEU" in run(tb.visit(url, "BLEU of the big model"))

"""Data synthesis: the crawler on the real loopback web, CrawlQA generation and validation, E2HQA, and resuming
teacher-trajectory sampling after a real kill."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from openai_loopback import LoopbackOpenAI, completion
from wdlib import synthesis as syn
from wdlib.config import ModelSpec
from wdlib.text import parse_json_objects
from wdlib.trajectory import QAPair, load_trajectories, read_jsonl

ROOT = "https://docs.python.org/3/library/index.html"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def crawl8(toolbox):
    return asyncio.run(syn.crawl(toolbox.fetch, [ROOT], max_depth=1, max_pages=8, progress=False))


# ------------------------------------------------------------------ crawler
def test_crawler_stays_inside_its_site_and_limits(crawl8):
    pages = crawl8.pages
    assert len(pages) == 8
    assert pages[0].url == ROOT and pages[0].depth == 0
    assert all(urlsplit(p.url).netloc == "docs.python.org" for p in pages)
    assert [p.depth for p in pages] == sorted(p.depth for p in pages)  # breadth-first
    assert max(p.depth for p in pages) == 1
    assert len({p.url for p in pages}) == len(pages)
    # the index links outside its site (GitHub, PEPs, Wikipedia...): seen, never fetched
    assert crawl8.out_of_scope and not crawl8.out_of_scope & {p.url for p in pages}
    assert all(urlsplit(u).netloc != "docs.python.org" for u in crawl8.out_of_scope)
    # every page at depth 1 was linked from a kept page
    kept = {p.url: p for p in pages}
    assert all(p.parent in kept and p.url in kept[p.parent].links for p in pages[1:])
    assert pages[0].text and pages[0].links and pages[1].title


def test_crawler_depth_allow_deny_and_concurrency(toolbox):
    in_flight, peak = 0, 0

    async def fetch(url):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.01)
            return await toolbox.fetch(url)
        finally:
            in_flight -= 1

    only_root = asyncio.run(syn.crawl(fetch, [ROOT], max_depth=0, max_pages=50, progress=False))
    assert [p.url for p in only_root.pages] == [ROOT]
    result = asyncio.run(syn.crawl(fetch, [ROOT], max_depth=1, max_pages=12, allow=[r"/3/library/"],
                                   deny=[r"/library/(string|re)\.html$"], concurrency=3, progress=False))
    urls = [p.url for p in result.pages]
    assert len(urls) == 12 and all("/3/library/" in u for u in urls)
    assert not any(u.endswith(("/library/string.html", "/library/re.html")) for u in urls)
    assert 1 < peak <= 3


def test_crawler_records_failures_and_never_raises(toolbox):
    missing = "https://docs.python.org/3/library/no-such-page.html"
    result = asyncio.run(syn.crawl(toolbox.fetch, [missing, "https://not-in-the-local-web.example/"],
                                   max_depth=1, max_pages=5, progress=False))
    assert result.pages == [] and set(result.errors) == {missing, "https://not-in-the-local-web.example/"}


# ------------------------------------------------------------------ CrawlQA
def test_template_qa_is_grounded_in_the_crawl(toolbox):
    pages = asyncio.run(syn.crawl(toolbox.fetch, [ROOT], max_depth=1, max_pages=20, progress=False)).pages
    qa = syn.template_qa(pages, 9, seed=1)
    by_url = {p.url: p for p in pages}
    assert {q.type for q in qa} == set(syn.QA_TYPES) and len(qa) == 9
    assert len({q.question for q in qa}) == len(qa)
    for q in qa:
        assert q.source == "crawlqa" and q.provenance["generator"] == "template"
        assert all(u in by_url for u in q.evidence_urls)
        assert not syn.leaks(q.answer, q.question)
        if q.type == "COUNT":
            assert int(q.answer) == len(by_url[q.evidence_urls[0]].sections) >= 2
        elif q.type == "MULTI-HOP":
            first, second = (by_url[u] for u in q.evidence_urls)
            assert second.url in first.links and q.answer == second.sections[0]
            assert syn.answer_in_text(q.answer, second.text)
        else:
            a, b = (by_url[u] for u in q.evidence_urls[:2])
            assert q.provenance["target"] in set(a.links) & set(b.links)
    assert syn.template_qa(pages, 9, seed=1) == qa  # deterministic


def test_validate_qa_rejects_bad_records():
    page = syn.CrawledPage(url="https://x.org/a", text="The capital of Freedonia is Fredville. It has 3 bridges.")
    pages = {page.url: page}
    good = {"question": "What is the capital of Freedonia?", "answer": "Fredville", "type": "MULTI-HOP",
            "evidence_urls": [page.url]}
    assert syn.validate_qa(good, pages)[1] == "ok"
    cases = {
        "missing answer": {**good, "answer": ""},
        "type": {**good, "type": "TRIVIA"},
        "not a question": {**good, "question": "Name the capital of Freedonia."},
        "longer than": {**good, "answer": "the town that everyone in the whole country calls Fredville today and tomorrow too"},
        "not among the crawled": {**good, "evidence_urls": ["https://elsewhere.org/"]},
        "appears in the question": {**good, "question": "Is Fredville the capital of Freedonia?"},
        "not found in the evidence": {**good, "answer": "Springfield"},
        "not a number": {**good, "type": "COUNT", "question": "How many bridges does Freedonia's capital have?"},
        "not a JSON object": ["a list"],
    }
    for expected, record in cases.items():
        clean, why = syn.validate_qa(record, pages)
        assert clean is None and expected in why, (expected, why)
    count = {**good, "type": "count", "question": "How many bridges does the capital have?", "answer": "3"}
    assert syn.validate_qa(count, pages)[0]["type"] == "COUNT"
    dup = [QAPair(question="What is X?", answer="1"), QAPair(question="what is  x", answer="2")]
    assert len(syn.dedupe(dup)) == 1


def test_parse_json_objects_tolerates_what_models_write():
    assert parse_json_objects('```json\n{"question": "q?", "answer": "a"}\n```') == [{"question": "q?", "answer": "a"}]
    assert parse_json_objects('Sure! Here it is: {"a": 1,} and also {\'b\': "x"}') == [{"a": 1}, {"b": "x"}]
    assert parse_json_objects('[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]
    assert parse_json_objects("no json here {oops") == []


def test_llm_crawlqa_validates_and_requests_json_schema(crawl8):
    """The teacher behind an OpenAI-compatible endpoint (a loopback server standing in for a paid API): one good
    record, one that leaks its answer, one that is not JSON. Only the good one is kept; the schema is requested."""
    pages = crawl8.pages
    page = next(p for p in pages if len(p.sections) >= 2 and not any(c.isdigit() for c in p.name))
    replies = iter([
        json.dumps({"question": f"How many top-level sections does the page “{page.name}” have?",
                    "answer": str(len(page.sections)), "type": "COUNT", "evidence_urls": [page.url]}),
        json.dumps({"question": "Is the answer 42 here?", "answer": "42", "type": "COUNT", "evidence_urls": []}),
        "I cannot write JSON today.",
    ])
    with LoopbackOpenAI(lambda body: (200, completion(next(replies, "nothing")))) as server:
        spec = ModelSpec(name="teacher", backend="openai", base_url=server.base_url)
        from wdlib.llm import make_client

        qa, reasons = asyncio.run(syn.llm_qa(pages, make_client(spec), 3, spec=spec, types=["COUNT"],
                                             concurrency=1, teacher="teacher", progress=False))
        body = server.requests[0][1]
    assert len(qa) == 1 and qa[0].answer == str(len(page.sections)) and qa[0].provenance["generator"] == "llm"
    assert reasons["answer appears in the question"] == 1 and reasons["no JSON object in the reply"] == 1
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["question", "answer", "type", "evidence_urls"]


# ------------------------------------------------------------------ E2HQA
def test_pick_entities_and_describe():
    q = 'Which film by Alan Moore features "King Solomon\'s Mines" and Captain Nemo?'
    assert syn.pick_entities(q, avoid=["Captain Nemo"]) == ["King Solomon's Mines", "Alan Moore"]
    text = "Alan Moore\nEnglish writer\nAlan Moore (born 1953) is an English author known for Watchmen, V for " \
           "Vendetta, From Hell and many other comics, which made him famous among readers of graphic novels."
    assert syn.describe("Alan Moore", text, max_words=8) == "an English author known for Watchmen"
    assert syn.describe("Paris", "Paris is the capital of the Paris region.") is None
    assert syn.template_rewrite("Snakes of the Americas?", "Americas", "a landmass of two continents") == \
        "Snakes of a landmass of two continents?"
    assert syn.check_rewrite("Which author wrote it?", "Which author wrote Watchmen?", "Watchmen", "Alan Moore") is None
    assert syn.check_rewrite("Which author, Alan Moore, wrote it?", "Which author wrote Watchmen?", "Watchmen",
                             "Alan Moore") == "leaks the answer"
    assert syn.check_rewrite("Who wrote Watchmen?", "Which author wrote Watchmen?", "Watchmen", "x") == \
        "still names the entity"


def test_e2hqa_keeps_the_answer_and_records_hops(local_web_cfg, toolbox):
    cfg = local_web_cfg.model_copy(deep=True)
    cfg.synthesis.e2hqa.seed_file, cfg.synthesis.e2hqa.num_seeds = None, 6
    cfg.synthesis.e2hqa.hops, cfg.synthesis.e2hqa.rewriter = 2, "template"
    seeds = asyncio.run(syn.e2hqa_seeds(cfg, toolbox))
    assert len(seeds) == 6 and all(s.answer and not syn.leaks(s.answer, s.question) for s in seeds)
    hardened = [asyncio.run(syn.harden(s, toolbox, hops=2, rewriter="template")) for s in seeds]
    assert sum(q.difficulty >= 1 for q in hardened) >= 3
    for seed, q in zip(seeds, hardened):
        hops = q.provenance["hops"]
        assert q.answer == seed.answer and q.difficulty == len(hops) and q.source == "e2hqa"
        assert q.provenance["seed"]["question"] == seed.question
        previous = seed.question
        for hop in hops:
            assert hop["entity"] in previous and hop["entity"] not in hop["question"]
            assert not syn.leaks(seed.answer, hop["question"]) and hop["results"]
            previous = hop["question"]
        assert q.question == previous
    kept, report = asyncio.run(syn.harden_seeds(seeds, toolbox, cfg, progress=False))
    assert report["kept"] == len(kept) == sum(q.difficulty >= 1 for q in hardened)


def test_e2hqa_rejects_a_rewrite_that_leaks_the_answer(local_web_cfg, toolbox):
    """The teacher's rewrite names the answer: rejected, recorded, and the template description is used instead."""
    cfg = local_web_cfg.model_copy(deep=True)
    cfg.synthesis.e2hqa.seed_file, cfg.synthesis.e2hqa.num_seeds = None, 6
    seeds = asyncio.run(syn.e2hqa_seeds(cfg, toolbox))
    results = {}
    for seed in seeds:
        def leak(body, answer=seed.answer):
            return 200, completion(f"Which thing, as {answer} says, is this?")

        with LoopbackOpenAI(leak) as server:
            from wdlib.llm import OpenAIClient

            q = asyncio.run(syn.harden(seed, toolbox, OpenAIClient("t", server.base_url), hops=1, rewriter="llm"))
            results[seed.id] = (q, len(server.requests))
        if q.difficulty:
            break
    q, calls = next(v for v in results.values() if v[0].difficulty)
    hop = q.provenance["hops"][0]
    assert calls >= 1 and hop["method"] == "template" and any("leaks the answer" in r for r in hop["rejected"])
    assert not syn.leaks(q.answer, q.question)


def test_split_eval_is_stratified_and_disjoint():
    qa = [QAPair(question=f"crawl question {i}?", answer="a", source="crawlqa") for i in range(8)]
    qa += [QAPair(question=f"e2h question {i}?", answer="b", source="e2hqa") for i in range(4)]
    train, held = syn.split_eval(qa, 0.25, seed=3)
    assert len(held) == 3 and {q.source for q in held} == {"crawlqa", "e2hqa"}
    assert not {q.id for q in train} & {q.id for q in held} and len(train) + len(held) == len(qa)
    assert syn.split_eval(qa, 0.25, seed=3) == (train, held)
    assert syn.split_eval(qa[:1], 0.5) == (qa[:1], [])


# ------------------------------------------------------------------ resumable teacher trajectories
_SAMPLER = textwrap.dedent("""
    import asyncio, sys, torch
    torch.set_num_threads(2)
    from wdlib import params, synthesis, tools
    from wdlib.llm import make_client
    from wdlib.trajectory import QAPair
    cfg = params.load("ci.yaml")
    # two at a time: the first pair is written while the second is still being generated when the test kills us
    cfg.trajectories.concurrency, cfg.trajectories.max_turns, cfg.trajectories.samples_per_question = 2, 1, 1
    cfg.models.teacher.max_new_tokens = 16
    qa = [QAPair(question=q, answer="x", source="test") for q in
          ["What is os.getcwd?", "Who wrote Hamlet?", "What does re.sub do?", "What is a tuple?"]]
    client = make_client(cfg.models.teacher, device="cpu")
    with tools.Toolbox.from_config(cfg) as toolbox:
        out = asyncio.run(synthesis.sample_trajectories(qa, client, toolbox, cfg, sys.argv[1], progress=False))
    print("TOTAL", len(out))
""")


def test_resume_after_a_kill_loses_nothing_finished(tmp_path):
    path = tmp_path / "trajectories.jsonl"
    script = tmp_path / "sample.py"
    script.write_text(_SAMPLER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, str(script), str(path)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if path.is_file() and len(list(read_jsonl(path))) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run: the other questions are still being sampled
    proc.wait()
    before = {r["id"]: r for r in read_jsonl(path)}
    assert 1 <= len(before) < 4

    done = subprocess.run([sys.executable, str(script), str(path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    after = load_trajectories(path)
    assert len(after) == len({t.id for t in after}) == 4  # every question once, nothing duplicated
    by_id = {t.id: t for t in after}
    for tid, record in before.items():  # what finished before the kill is kept exactly as it was
        assert by_id[tid].messages == record["messages"] and by_id[tid].prediction == record.get("prediction")
    assert all("kept" in t.filters for t in after)  # the funnel judged every trajectory

    again = subprocess.run([sys.executable, str(script), str(path)], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert "TOTAL 4" in again.stdout
    assert [t.to_dict() for t in load_trajectories(path)] == [t.to_dict() for t in after]  # nothing re-run

"""Report mode: reading a writer's draft, the citation check on a hand-made report (known supported and unsupported
sentences, both directions), evidence from the real toolbox, the whole flow with a scripted agent and writer on a
loopback endpoint, bad input, the CLI, and the page in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import pytest

from chromium import check_page
from openai_loopback import LoopbackOpenAI, completion
from wdlib import config
from wdlib.report import (RecordingToolbox, Source, check_draft, content_words, gather_sources, has_facts,
                          parse_draft, slugify, write_reports)
from wdlib.report.draft import WRITER_SYSTEM, citations
from wdlib.viewer import load_any

# ------------------------------------------------------------------ the writer's draft
def test_parse_draft_reads_sections_sentences_and_citations():
    reply = ("<think>plan the report</think>\n# Joining paths\nos.path.join joins segments [1]. If one is absolute, "
             "earlier ones are dropped. [2] On Windows the drive counts too [1][3].\n\n## Details\n"
             "- It uses `os.sep` [1, 2].\n- Ranges are read [2-4]\n\n## References\n"
             "[1] os.path — https://docs.python.org\n")
    draft = parse_draft(reply, "topic")
    assert draft.title == "Joining paths" and [s.heading for s in draft.sections] == ["Summary", "Details"]
    assert [(s.plain, s.cites) for s in draft.sentences] == [
        ("os.path.join joins segments.", [1]), ("If one is absolute, earlier ones are dropped.", [2]),
        ("On Windows the drive counts too.", [1, 3]), ("It uses os.sep.", [1, 2]), ("Ranges are read", [2, 3, 4])]
    assert "https://docs.python.org" not in json.dumps(draft.to_dict()["sections"])  # its own references: dropped
    assert parse_draft("", "the topic").title == "the topic" and parse_draft("", "x").sentences == []
    assert citations("[3] then [1; 2] and [3]") == [3, 1, 2]
    assert slugify("What does os.path.join do?") == "what-does-os-path-join-do" and slugify("  ") == "empty-topic"
    assert slugify("北京 是什么") == "北京-是什么" and slugify("Café") == "cafe"


# ------------------------------------------------------------------ the citation check, on a hand-made report
OS_PATH = ("os.path.join(path, *paths)\nJoin one or more path segments intelligently. The return value is the "
           "concatenation of path and all members of *paths, with exactly one directory separator following each "
           "non-empty part except the last. If a segment is an absolute path, then all previous segments are ignored "
           "and joining continues from the absolute path segment.\n")
BURKINA = "Ouagadougou is the capital and largest city of Burkina Faso, with a population of 2,453,496 in 2019.\n"
SOURCES = [Source("https://docs.python.org/3/library/os.path.html", "os.path", True, OS_PATH, n=1),
           Source("https://en.wikipedia.org/wiki/Ouagadougou", "Ouagadougou", True, BURKINA, n=2),
           Source("https://example.org/py311", "Python 3.11", False, "os.path.join was added in Python 3.11.", n=3),
           Source("https://en.wikipedia.org/wiki/Python", "Python", True, "Python is a programming language.", n=4)]
HAND_MADE = """# A hand-made report
os.path.join joins path segments with exactly one directory separator [1]. If a segment is an absolute path, all \
previous segments are ignored [1]. Ouagadougou is the capital of Burkina Faso [2]. Ouagadougou had a population of \
3,000,000 in 2019 [2]. os.path.join was added in Python 3.11 [3]. Ouagadougou is the capital of Burkina Faso [1]. \
The function splits strings at commas [7].

## Details
If a segment is absolute, earlier segments are dropped [3][1]. Joining is done for you by the standard library. The \
os.path module also offers split.
"""
# (sentence, supported?): what a careful reader says about each cited sentence of HAND_MADE against SOURCES
EXPECTED = [
    ("os.path.join joins path segments with exactly one directory separator.", True),
    ("If a segment is an absolute path, all previous segments are ignored.", True),
    ("Ouagadougou is the capital of Burkina Faso.", True),
    ("Ouagadougou had a population of 3,000,000 in 2019.", False),  # the number is not the page's
    ("os.path.join was added in Python 3.11.", False),  # [3] was never visited: a snippet does not count
    ("Ouagadougou is the capital of Burkina Faso.", False),  # [1] is about paths
    ("The function splits strings at commas.", False),  # no source [7]
    ("If a segment is absolute, earlier segments are dropped.", True),  # [1]: 4 of its 6 content words (67%)
]


def _checked(text: str = HAND_MADE, **kwargs):
    draft = parse_draft(text, "topic")
    return draft, asyncio.run(check_draft(draft, SOURCES, **kwargs))


def test_citation_precision_on_a_hand_made_report():
    draft, figures = _checked()
    cited = [s for s in draft.sentences if s.cites]
    assert [(s.plain, s.check["supported"]) for s in cited] == EXPECTED
    assert figures["cited_sentences"] == 8 and figures["supported_sentences"] == 4
    assert figures["citation_precision"] == 0.5  # 4 / 8
    assert figures["citations"] == 9 and figures["supported_citations"] == 4
    assert figures["uncited_factual"] == ["The os.path module also offers split."]
    assert figures["uncited_references"] == [4] and figures["unknown_references"] == [7]
    reasons = {s.plain: s.check["citations"][0]["reason"] for s in cited}
    assert "3000000" in reasons["Ouagadougou had a population of 3,000,000 in 2019."]
    assert "never visited" in reasons["os.path.join was added in Python 3.11."]
    assert "no source has number 7" in reasons["The function splits strings at commas."]
    # the evidence a citation shows is the passage of the page that matched best
    assert "absolute path segment" in cited[1].check["citations"][0]["passage"]


def test_threshold_and_snippets_move_the_verdicts_both_ways():
    _, stricter = _checked(threshold=0.7)  # the 67% sentence falls below it, nothing else moves
    assert stricter["supported_sentences"] == 3 and stricter["citation_precision"] == 3 / 8
    _, snippets = _checked(accept_snippets=True)  # the snippet of [3] now backs its sentence
    assert snippets["supported_sentences"] == 5
    _, none_cited = _checked("# T\nOuagadougou is large. It is in Burkina Faso.\n")
    assert none_cited["citation_precision"] is None and none_cited["cited_sentences"] == 0
    assert none_cited["uncited_factual"] == ["It is in Burkina Faso."]
    assert none_cited["uncited_references"] == [1, 2, 3, 4]


def test_content_words_and_facts():
    assert content_words("The os.path.join() of 72,067 paths") == ["os", "path", "join", "72067", "paths"]
    assert has_facts("It has 3 parts.") and has_facts("The capital is Paris.") and has_facts("Use os.path here.")
    assert not has_facts("The sources do not answer this.") and not has_facts("I could not find it.")


class ScriptedJudge:
    """A judge client with the `chat` contract: its reply depends on the prompt."""

    def __init__(self, reply):
        self.reply, self.prompts = reply, []

    async def chat(self, messages, **sampling):
        self.prompts.append(messages[0]["content"])
        text = self.reply(messages[0]["content"])
        if isinstance(text, Exception):
            raise text

        class Reply:
            pass

        r = Reply()
        r.text = text
        return r


def test_llm_judge_decides_when_configured_and_falls_back_when_it_cannot():
    judge = ScriptedJudge(lambda p: "supported: yes" if "[sentence]: Ouagadougou is the capital" in p
                          else "no\nsupported: no")
    draft, figures = _checked(judge=judge)
    verdicts = [s.check["supported"] for s in draft.sentences if s.cites]
    # the judge accepts the wrong-source sentence (it said yes to any capital sentence) and rejects the paths ones;
    # an unvisited page and an unknown number are never sent to it
    assert verdicts == [False, False, True, False, False, True, False, False]
    assert figures["method"] == "llm" and len(judge.prompts) == 6
    assert all("[passage]" in p for p in judge.prompts)
    draft, _ = _checked(judge=ScriptedJudge(lambda p: "I am not sure."))
    assert [s.check["supported"] for s in draft.sentences if s.cites] == [e for _, e in EXPECTED]
    assert draft.sentences[0].check["citations"][0]["method"] == "lexical (judge gave no verdict)"
    draft, _ = _checked(judge=ScriptedJudge(lambda p: ConnectionError("judge down")))
    assert draft.sentences[0].check["citations"][0]["method"] == "lexical (judge failed: ConnectionError)"


# ------------------------------------------------------------------ evidence from the real toolbox
def test_gather_sources_from_the_real_local_web(toolbox):
    recorder = RecordingToolbox(toolbox)

    async def research():
        found = await recorder.call("search", {"query": ["os.path.join absolute path"]})
        url = re.search(r"\]\((https?://[^)]+)\)", found).group(1)
        await recorder.call("visit", {"url": [url, "https://nowhere.invalid/x"], "goal": "join"})
        return await gather_sources(recorder.calls, toolbox, "os.path.join absolute path", max_sources=10)

    sources, stats = asyncio.run(research())
    assert [c["tool"] for c in recorder.calls] == ["search", "visit"]
    assert stats["searches"] == 1 and stats["visits"] == 2 and stats["pages_read"] == 1
    assert stats["failed_visits"][0]["url"] == "https://nowhere.invalid/x"
    first = sources[0]
    assert first.visited and first.n == 1 and first.url == "https://docs.python.org/3/library/os.path.html"
    assert first.title.startswith("os.path") and "all previous segments are ignored" in first.text
    assert first.queries == ["os.path.join absolute path"] and "absolute" in first.excerpt
    assert all(not s.visited and s.text for s in sources[1:]) and [s.n for s in sources] == list(
        range(1, len(sources) + 1))


# ------------------------------------------------------------------ the whole flow, scripted agent and writer
TOPIC = "What does os.path.join do with an absolute path?"


def scripted(writer_reply):
    """One endpoint for both roles: the agent searches, visits the first result, answers; the writer (its system
    prompt is WRITER_SYSTEM) replies with `writer_reply(prompt)`."""

    def handler(body):
        messages = body["messages"]
        if messages[0]["content"] == WRITER_SYSTEM:
            reply = writer_reply(messages[1]["content"])
            return (500, {"error": {"message": "writer down"}}) if reply is None else (200, completion(reply))
        k = sum(m["role"] == "assistant" for m in messages)
        if k == 0:
            text = ('<think>Search.</think>\n<tool_call>\n{"name": "search", "arguments": {"query": '
                    '["os.path.join absolute path"]}}\n</tool_call>')
        elif k == 1:
            url = re.search(r"\]\((https?://[^)]+)\)", messages[-1]["content"]).group(1)
            text = (f'<think>Read it.</think>\n<tool_call>\n{{"name": "visit", "arguments": {{"url": ["{url}"], '
                    f'"goal": "absolute paths"}}}}\n</tool_call>')
        else:
            text = "<think>Enough.</think>\n<answer>Earlier segments are dropped.</answer>"
        return 200, completion(text)

    return handler


def good_writer(prompt):
    n = re.search(r"^\[(\d+)\] os\.path", prompt, re.M).group(1)
    return (f"# Absolute paths in os.path.join\n\n## Summary\nIf a segment is an absolute path, then all previous "
            f"segments are ignored [{n}]. os.path.join was first written in 1991 [{n}].\n\n## Notes\n"
            f"Joining continues from the absolute path segment [{n}]. The os.path module is part of Python.")


def _reports(cfg, server, topics, tmp_path, **kw):
    from wdlib.llm import OpenAIClient

    client = OpenAIClient("scripted", server.base_url, max_retries=0)
    return write_reports(cfg, topics, out=tmp_path / "r" if len(topics) == 1 else None, client=client, progress=False,
                         **kw)


@pytest.fixture
def cfg(local_web_cfg, tmp_path):
    return local_web_cfg.model_copy(update={"run": local_web_cfg.run.model_copy(
        update={"name": "t", "output_dir": str(tmp_path / "out")})}, deep=True)


def test_report_from_scripted_agent_and_writer(cfg, toolbox, tmp_path):
    with LoopbackOpenAI(scripted(good_writer)) as server:
        report = _reports(cfg, server, [TOPIC], tmp_path, toolbox=toolbox)[0]
    d = report.data
    assert report.dir == tmp_path / "r" and not report.problems
    assert sorted(p.name for p in report.dir.iterdir()) == sorted(d["files"]) == sorted(
        ["report.html", "report.md", "report.json", "trajectory.html", "trajectory.jsonl", "sources.jsonl",
         "evidence.jsonl"])
    assert d["title"] == "Absolute paths in os.path.join" and d["research"]["pages_read"] == 1
    c = d["check"]
    assert (c["cited_sentences"], c["supported_sentences"], c["citation_precision"]) == (3, 2, 2 / 3)
    assert c["uncited_factual"] == ["The os.path module is part of Python."] and c["unknown_references"] == []
    assert [t.question for t in load_any(report.dir / "trajectory.jsonl")] == [TOPIC]  # the viewer opens it
    calls = [json.loads(line) for line in (report.dir / "evidence.jsonl").read_text().splitlines()]
    assert [c["tool"] for c in calls] == ["search", "visit"] and "Evidence in page" in calls[1]["observation"]
    page = (report.dir / "report.html").read_text()
    assert page.count('<span class="s bad" title=') == 1 and "1991" in page and 'href="trajectory.html"' in page
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|@import|url\(", page)  # self-contained
    md = (report.dir / "report.md").read_text()
    assert "first written in 1991 [1]. ⚠" in md and "## References" in md


def test_report_page_renders_in_headless_chromium(cfg, toolbox, tmp_path):
    with LoopbackOpenAI(scripted(lambda p: good_writer(p) + " Some cite nothing [9].")) as server:
        report = _reports(cfg, server, [TOPIC], tmp_path, toolbox=toolbox)[0]
    found = check_page(report.html, tmp_path / "chromium")
    assert found["title"] == "Absolute paths in os.path.join"
    assert found["cites"] == 4 and found["bad"] == [] and found["unlinked"] == []  # [9] links to its "no source" entry
    assert "#ref-9" in found["targets"] and found["references"] == len(report.data["sources"]) + 1
    assert found["unsupported"] == ["underline", "underline"]  # the 1991 sentence and the [9] one
    assert set(found["popups"]) == {"none"}  # the evidence pop-ups wait for a hover or a click


def test_bad_input_ends_in_a_report_that_says_what_is_missing(cfg, toolbox, tmp_path):
    # empty topic: no model, no research, still a report
    report = write_reports(cfg, ["   "], out=tmp_path / "empty", progress=False)[0]
    assert "No topic was given" in report.problems[0] and (tmp_path / "empty" / "report.html").is_file()
    assert "No topic was given" in (tmp_path / "empty" / "report.html").read_text()

    def answers_at_once(body):  # the agent answers without any tool: nothing found, the writer is never asked
        assert body["messages"][0]["content"] != WRITER_SYSTEM, "the writer was asked without evidence"
        return 200, completion("<think>I know it.</think>\n<answer>It joins.</answer>")

    with LoopbackOpenAI(answers_at_once) as server:
        report = _reports(cfg, server, ["anything"], tmp_path, toolbox=toolbox)[0]
    assert report.problems[0].startswith("Nothing was found on this topic") and report.data["sources"] == []
    assert "trajectory.html" in report.data["files"]

    with LoopbackOpenAI(scripted(lambda p: "# T\nThe os.path module joins paths. It is in Python.")) as server:
        report = _reports(cfg, server, [TOPIC], tmp_path, toolbox=toolbox)[0]
    assert report.problems == ["The writer cited no source: none of its 2 sentences can be checked against the "
                               "evidence; treat the text as unsourced."]
    assert report.data["check"]["citation_precision"] is None and len(report.data["check"]["uncited_factual"]) == 2

    with LoopbackOpenAI(scripted(lambda p: None)) as server:  # the writer's endpoint fails
        report = _reports(cfg, server, [TOPIC], tmp_path, toolbox=toolbox)[0]
    assert report.problems[0].startswith("The writer failed") and len(report.data["sources"]) >= 1
    assert "What is missing" in report.html.read_text()


def test_research_starts_from_the_params_prompt(cfg, toolbox, tmp_path):
    from wdlib.agent import resolve_prompt
    from wdlib.report import ReportError

    cfg.agent.prompt = "webdancer"  # the authors' prompt, read from their released trajectories
    systems = []
    handler = scripted(good_writer)

    def spy(body):
        systems.append(body["messages"][0]["content"])
        return handler(body)

    with LoopbackOpenAI(spy) as server:
        report = _reports(cfg, server, [TOPIC], tmp_path, toolbox=toolbox)[0]
    assert not report.problems and systems[0].startswith(resolve_prompt(cfg).system_before_date)
    cfg.agent.webdancer_prompt_file = str(tmp_path / "missing.jsonl")
    with pytest.raises(ReportError, match="webdancer_prompt_file"):
        write_reports(cfg, [TOPIC], out=tmp_path / "m", progress=False, toolbox=toolbox)


def test_several_topics_go_to_the_run_folder(cfg, toolbox, tmp_path):
    with LoopbackOpenAI(scripted(good_writer)) as server:
        reports = _reports(cfg, server, [TOPIC, "os.path.join"], tmp_path, toolbox=toolbox)
    assert [r.dir for r in reports] == [cfg.paths.reports / slugify(TOPIC), cfg.paths.reports / "os-path-join"]
    assert all(r.html.is_file() for r in reports)


def test_cli_bad_input_and_unknown_checkpoint(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(f"extends: {config.PARAMS_DIR / 'ci.yaml'}\nrun: {{name: t, output_dir: {tmp_path / 'out'}}}\n")
    cli = [sys.executable, "-m", "wdlib.report", "--params", str(params)]
    r = subprocess.run(cli + [""], capture_output=True, text=True, cwd=config.REPO_ROOT)
    assert r.returncode == 1 and "No topic was given" in r.stderr
    assert (tmp_path / "out" / "t" / "reports" / "empty-topic" / "report.html").is_file()
    r = subprocess.run(cli + ["--model", "sft", TOPIC], capture_output=True, text=True, cwd=config.REPO_ROOT)
    assert r.returncode == 2 and "no checkpoint at" in r.stderr and "run notebook 03 first" in r.stderr
    r = subprocess.run(cli[:3] + ["--params", str(tmp_path / "missing.yaml"), TOPIC], capture_output=True, text=True,
                       cwd=config.REPO_ROOT)
    assert r.returncode == 2 and "params file not found" in r.stderr


def test_report_files_never_hold_a_key(cfg, toolbox, tmp_path, monkeypatch):
    # a topic (or a page, or the writer) that carries a key: report.json/.md/.html are redacted like every record
    monkeypatch.setenv("REPORT_TEST_API_KEY", "sk-report-test-0123456789")
    topic = "Why does https://api.example.org/v1?api_key=QWERTY123456789 fail with sk-report-test-0123456789?"

    def answers_at_once(body):
        return 200, completion("<think>I know it.</think>\n<answer>It fails.</answer>")

    with LoopbackOpenAI(answers_at_once) as server:
        report = _reports(cfg, server, [topic], tmp_path, toolbox=toolbox)[0]
    for name in ("report.json", "report.md", "report.html", "trajectory.jsonl", "trajectory.html"):
        text = (report.dir / name).read_text()
        assert "<redacted>" in text or "&lt;redacted&gt;" in text, name
        assert "QWERTY123456789" not in text and "sk-report-test-0123456789" not in text, name

"""Format demonstrations (`wdlib.synthesis.demos`): scripted episodes in format, over the real tools, resumable."""

from __future__ import annotations

import asyncio

from wdlib import config, synthesis
from wdlib.synthesis import demos
from wdlib.trajectory import QAPair, load_trajectories


def test_scripted_episodes_are_in_format_and_observe_the_real_tools(toolbox):
    from wdlib.react import check_format, parse_turn, system_prompt, tool_response, user_prompt

    qa = [QAPair(question="What does the “os.getcwd” function of the Python standard library return?",
                 answer="the current working directory", source="test"),
          QAPair(question="Which module of the Python standard library provides JSON encoding and decoding?",
                 answer="json", source="test", evidence_urls=["https://docs.python.org/3/library/json.html"])]
    trajs = asyncio.run(demos.scripted_trajectories(qa, toolbox, visit=True, max_results=2, max_observation_chars=900,
                                                  date="2025-01-01"))
    assert len(trajs) == 2
    for q, t in zip(qa, trajs):
        assert check_format(t.messages) is None
        assert t.messages[0] == {"role": "system", "content": system_prompt("2025-01-01")}
        assert t.messages[1] == {"role": "user", "content": user_prompt(q.question)}
        turns = [parse_turn(m["content"]) for m in t.messages if m["role"] == "assistant"]
        assert all(turn.ok for turn in turns) and turns[-1].answer == q.answer == t.prediction
        assert [c.tool_call.name for c in turns[:-1]] == ["search", "visit"] == [c["name"] for c in t.tool_calls]
        observations = [m["content"] for m in t.messages[2:] if m["role"] == "user"]
        assert len(observations) == 2 and all(len(o) <= 900 + 40 for o in observations)
        # the observations are the real tools' answers (capped), wrapped exactly as the agent wraps them
        search = asyncio.run(toolbox.call("search", t.tool_calls[0]["arguments"]))
        assert observations[0] == tool_response(demos.cap_search_observation(search, 2, 900))
        assert "2. [" in observations[0] and "3. [" not in observations[0] and "3. [" in search
        assert "found 2 results" in observations[0]
        visit = asyncio.run(toolbox.call("visit", t.tool_calls[1]["arguments"]))
        assert observations[1].removeprefix("<tool_response>\n")[:200] == visit[:200]
    assert trajs[1].tool_calls[1]["arguments"]["url"] == qa[1].evidence_urls  # evidence first
    assert trajs[0].tool_calls[0]["arguments"]["query"] == ["os.getcwd"]  # the quoted name is the query
    no_visit = asyncio.run(demos.scripted_trajectories(qa[:1], toolbox, visit=False))
    assert [c["name"] for c in no_visit[0].tool_calls] == ["search"] and check_format(no_visit[0].messages) is None


def test_write_format_demos_skips_the_runs_questions_and_is_reused(toolbox, tmp_path):
    from wdlib.rewards import check_format

    data = config.load("params/ci.yaml").dump()
    data["run"].update(output_dir=str(tmp_path), name="t")
    data["trajectories"]["format_demos"] = {"num": 4, "visit": 0.5}
    cfg = config.from_dict(data)
    pages = asyncio.run(synthesis.crawl(toolbox.fetch, ["https://docs.python.org/3/library/index.html"],
                                        max_depth=1, max_pages=12, progress=False)).pages
    taken = [q.question for q in synthesis.template_qa(pages, 3, seed=cfg.run.seed + 1)]
    written = asyncio.run(demos.write_format_demos(cfg, pages, toolbox, exclude=taken))
    assert len(written) == 4 and not {t.question for t in written} & set(taken)
    assert all(check_format(t.messages) is None and t.source == "scripted" for t in written)
    assert [t.to_dict() for t in load_trajectories(cfg.paths.format_demos)] == [t.to_dict() for t in written]
    # same settings: read back, not re-run (a toolbox that fails on any call proves no tool was called)

    class NoTools:
        async def call(self, *a, **k):
            raise AssertionError("re-ran the tools")

    again = asyncio.run(demos.write_format_demos(cfg, pages, NoTools(), exclude=taken))
    assert [t.to_dict() for t in again] == [t.to_dict() for t in written]
    cfg.trajectories.format_demos.num = 0  # changed settings: rebuilt, and 0 writes nothing
    assert asyncio.run(demos.write_format_demos(cfg, pages, NoTools())) == []
    assert not cfg.paths.format_demos.exists()


def test_scripted_query_reads_names_then_content_words():
    assert demos.scripted_query("What does “os.getcwd” return?") == "os.getcwd"
    assert demos.scripted_query("How many sections does the page about asyncio have?") == "sections about asyncio"

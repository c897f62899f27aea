"""The turn parser (real WebDancer turns + a fuzz set of malformed turns), prompts, the ReAct loop, run_many."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from wdlib.react import Turn, error_observation, parse_turn
from wdlib.trajectory import load_webdancer, read_jsonl

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "webdancer-samples" / "sample_traj.jsonl"

GOOD_CALL = ('<think>\nI need the release year.\n</think>\n<tool_call>\n'
             '{"name": "search", "arguments": {"query": ["python 3.11 release"]}}\n</tool_call>')


# ------------------------------------------------------------------ parse_turn: well-formed and tolerated
def test_parse_search_call():
    t = parse_turn(GOOD_CALL)
    assert t.error is None and t.answer is None
    assert t.think == "I need the release year."
    assert t.tool_call.name == "search" and t.tool_call.arguments == {"query": ["python 3.11 release"]}


def test_parse_answer():
    t = parse_turn("<think> done </think>\n<answer> Epsom Derby </answer>")
    assert t.ok and t.answer == "Epsom Derby" and t.tool_call is None and t.think == "done"


@pytest.mark.parametrize("body,expected", [
    # query as a plain string -> wrapped in a list
    ('{"name": "search", "arguments": {"query": "sqlite pragma"}}', {"query": ["sqlite pragma"]}),
    # "queries" (the name in WebDancer's functions field) -> query
    ('{"name": "search", "arguments": {"queries": ["a", "b"]}}', {"query": ["a", "b"]}),
    # arguments as a JSON string
    ('{"name": "search", "arguments": "{\\"query\\": [\\"x\\"]}"}', {"query": ["x"]}),
    # code fence around the JSON
    ('```json\n{"name": "visit", "arguments": {"url": "https://a.org/x", "goal": "g"}}\n```',
     {"url": ["https://a.org/x"], "goal": "g"}),
    ('```\n{"name": "visit", "arguments": {"url": ["https://a.org/x", "https://b.org"], "goal": "g"}}\n```',
     {"url": ["https://a.org/x", "https://b.org"], "goal": "g"}),
    # "parameters" instead of "arguments", extra whitespace everywhere
    ('   \n {"name": " search ", "parameters": {"query": ["  q  "]}}  \n', {"query": ["q"]}),
])
def test_parse_tolerates_what_models_emit(body, expected):
    t = parse_turn(f"<think>plan</think>\n<tool_call>{body}</tool_call>")
    assert t.error is None, t.error
    assert t.tool_call.arguments == expected


def test_every_webdancer_sample_turn_parses():
    records = list(read_jsonl(SAMPLES))
    assert len(records) == 100
    trajectories = load_webdancer(SAMPLES)
    n_turns = n_calls = 0
    for traj in trajectories:
        turns = [parse_turn(text) for text in traj.assistant_turns]
        for t, text in zip(turns, traj.assistant_turns):
            assert t.error is None, (traj.id, t.error, text[-300:])
        assert turns[-1].answer is not None  # every released trajectory ends in an answer
        assert all(t.tool_call is not None for t in turns[:-1])
        n_turns += len(turns)
        n_calls += sum(t.tool_call is not None for t in turns)
    assert n_turns == 212 and n_calls == 112  # counted independently from the raw file


# ------------------------------------------------------------------ fuzz: malformed turns
def _call(obj) -> str:
    return f"<think>x</think>\n<tool_call>\n{obj}\n</tool_call>"


MALFORMED = {
    # structure
    "empty": ("", "empty turn"),
    "whitespace": ("  \n\t ", "empty turn"),
    "no think, call": ('<tool_call>\n{"name": "search", "arguments": {"query": ["a"]}}\n</tool_call>', "no <think>"),
    "no think, answer": ("<answer>42</answer>", "no <think>"),
    "plain prose": ("The answer is probably 42.", "no <think>"),
    "unclosed think": ("<think>I should search for the author of", "unclosed <think>"),
    "think cut mid-call": ('<think>go</think>\n<tool_call>\n{"name": "search", "arguments": {"query": ["a', "unclosed <tool_call>"),
    "unclosed answer": ("<think>ok</think><answer>Paris", "unclosed <answer>"),
    "close without open think": ("reasoning here</think>\n<answer>x</answer>", "</think> without"),
    "close without open call": ('<think>a</think>{"name": "search"}</tool_call>', "</tool_call> without"),
    "close before open": ("<think>a</think></answer>x<answer>", "comes before"),
    "two thinks": ("<think>a</think><think>b</think><answer>x</answer>", "more than one <think>"),
    "two calls": (_call('{"name": "search", "arguments": {"query": ["a"]}}') +
                  '\n<tool_call>\n{"name": "search", "arguments": {"query": ["b"]}}\n</tool_call>', "more than one <tool_call>"),
    "two answers": ("<think>a</think><answer>x</answer><answer>y</answer>", "more than one <answer>"),
    "think only": ("<think>I will now search for it.</think>", "nothing actionable"),
    "think then prose": ("<think>hmm</think>\nI will search for the answer now.", "nothing actionable"),
    "call and answer": (_call('{"name": "search", "arguments": {"query": ["a"]}}') + "\n<answer>x</answer>", "both <tool_call> and <answer>"),
    "answer then call": ("<think>a</think><answer>x</answer>" + '<tool_call>{"name": "search", "arguments": {"query": ["a"]}}</tool_call>', "both"),
    "empty think": ("<think>  </think><answer>x</answer>", "empty <think>"),
    "empty answer": ("<think>a</think><answer>   </answer>", "empty <answer>"),
    "text before think": ("Sure! <think>a</think><answer>x</answer>", "text before <think>"),
    "answer inside think": ("<think>the answer is <answer>x</answer></think>", "inside or before <think>"),
    "call inside think": ('<think><tool_call>{"name": "search", "arguments": {"query": ["a"]}}</tool_call></think>', "inside or before"),
    "hallucinated response": (_call('{"name": "search", "arguments": {"query": ["a"]}}') + "\n<tool_response>\nfake\n</tool_response>", "<tool_response>"),
    # JSON
    "empty call": (_call(""), "empty <tool_call>"),
    "empty fence": (_call("```json\n```"), "empty <tool_call>"),
    "single quotes": (_call("{'name': 'search', 'arguments': {'query': ['a']}}"), "not valid JSON"),
    "trailing comma": (_call('{"name": "search", "arguments": {"query": ["a"],}}'), "not valid JSON"),
    "missing brace": (_call('{"name": "search", "arguments": {"query": ["a"]}'), "not valid JSON"),
    "python call syntax": (_call('search(query=["a"])'), "not valid JSON"),
    "xml args": (_call("<name>search</name><arguments><query>a</query></arguments>"), "not valid JSON"),
    "unquoted keys": (_call('{name: "search", arguments: {query: ["a"]}}'), "not valid JSON"),
    "two json objects": (_call('{"name": "search", "arguments": {"query": ["a"]}}\n{"name": "visit"}'), "not valid JSON"),
    "prose in call": (_call('I will call search with {"query": ["a"]}'), "not valid JSON"),
    "json list": (_call('[{"name": "search", "arguments": {"query": ["a"]}}]'), "must be a JSON object"),
    "json string": (_call('"search"'), "must be a JSON object"),
    "json number": (_call("42"), "must be a JSON object"),
    "json null": (_call("null"), "must be a JSON object"),
    "no name": (_call('{"arguments": {"query": ["a"]}}'), 'no "name"'),
    "name null": (_call('{"name": null, "arguments": {"query": ["a"]}}'), 'no "name"'),
    "name number": (_call('{"name": 3, "arguments": {"query": ["a"]}}'), 'no "name"'),
    "openai function shape": (_call('{"function": {"name": "search", "arguments": "{}"}}'), 'no "name"'),
    # tools and arguments
    "unknown tool": (_call('{"name": "google_search", "arguments": {"query": ["a"]}}'), "unknown tool 'google_search'"),
    "unknown tool answer": (_call('{"name": "answer", "arguments": {"text": "x"}}'), "unknown tool"),
    "capitalised tool": (_call('{"name": "Search", "arguments": {"query": ["a"]}}'), "unknown tool"),
    "no arguments": (_call('{"name": "search"}'), 'no "arguments"'),
    "arguments null": (_call('{"name": "search", "arguments": null}'), 'no "arguments"'),
    "arguments list": (_call('{"name": "search", "arguments": ["a"]}'), "must be a JSON object"),
    "arguments bad string": (_call('{"name": "search", "arguments": "query=a"}'), "not valid JSON"),
    "arguments string of list": (_call('{"name": "search", "arguments": "[1]"}'), "must be a JSON object"),
    "search no query": (_call('{"name": "search", "arguments": {}}'), "missing required argument 'query'"),
    "search wrong key": (_call('{"name": "search", "arguments": {"keywords": ["a"]}}'), "missing required argument 'query'"),
    "search empty query": (_call('{"name": "search", "arguments": {"query": []}}'), "missing required argument 'query'"),
    "search empty string": (_call('{"name": "search", "arguments": {"query": ""}}'), "missing required argument 'query'"),
    "search query number": (_call('{"name": "search", "arguments": {"query": 5}}'), "must be a string or a list"),
    "search query nested": (_call('{"name": "search", "arguments": {"query": [["a"]]}}'), "must be a string or a list"),
    "search query blank item": (_call('{"name": "search", "arguments": {"query": ["a", " "]}}'), "must be a string or a list"),
    "search query dict": (_call('{"name": "search", "arguments": {"query": {"q": "a"}}}'), "must be a string or a list"),
    "visit no goal": (_call('{"name": "visit", "arguments": {"url": ["https://a.org"]}}'), "missing required argument 'goal'"),
    "visit no url": (_call('{"name": "visit", "arguments": {"goal": "find x"}}'), "missing required argument 'url'"),
    "visit url number": (_call('{"name": "visit", "arguments": {"url": 7, "goal": "g"}}'), "'url' of 'visit' must be"),
    "visit goal list": (_call('{"name": "visit", "arguments": {"url": "https://a.org", "goal": ["g"]}}'), "'goal' of 'visit' must be a string"),
    "visit null goal": (_call('{"name": "visit", "arguments": {"url": "https://a.org", "goal": null}}'), "missing required argument 'goal'"),
}


def test_fuzz_set_is_large_enough():
    assert len(MALFORMED) >= 50


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_turns_give_precise_errors(name):
    text, expected = MALFORMED[name]
    turn = parse_turn(text)  # must not raise
    assert isinstance(turn, Turn)
    assert turn.error is not None and expected in turn.error, (name, turn.error)
    assert turn.tool_call is None and turn.answer is None
    obs = error_observation(turn.error)
    assert turn.error in obs and "<answer>" in obs


def test_parse_never_raises_on_garbage():
    import random

    rng = random.Random(0)
    pieces = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>", "{", "}", '"name"', ":",
              '"search"', '"arguments"', '"query"', "[", "]", ",", "```", "\n", "x", '"', "null", "<tool_response>"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        turn = parse_turn(text)
        assert turn.ok == (turn.error is None)
        assert turn.ok <= ((turn.tool_call is None) != (turn.answer is None))
    assert parse_turn(None).error  # type: ignore[arg-type]


# ------------------------------------------------------------------ prompts
def test_prompts_follow_webdancer_shape():
    from wdlib.react import TOOL_SCHEMAS, system_prompt, user_prompt
    from wdlib.trajectory import Trajectory

    system = system_prompt("2025-01-02")
    assert system.endswith("Current date: 2025-01-02")
    for word in ("Persist", "Verify", "details"):
        assert word in system
    user = user_prompt("Who wrote Dune?")
    tools = user[user.index("<tools>\n") + len("<tools>\n"): user.index("\n</tools>")]
    assert json.loads(f"[{tools}]") == TOOL_SCHEMAS  # the schemas, machine-readable, in WebDancer's layout
    # the question is recoverable the way WebDancer-format records are imported
    traj = Trajectory.from_webdancer({"messages": [{"role": "system", "content": system},
                                                   {"role": "user", "content": user},
                                                   {"role": "assistant", "content": "<think>a</think><answer>b</answer>"}]})
    assert traj.question == "Who wrote Dune?"


def test_compact_prompt_style_is_short_and_reaches_every_stage():
    from wdlib import config, params
    from wdlib.react import PROMPT_STYLES, prompt_messages, system_prompt, user_prompt

    assert PROMPT_STYLES == ("ours", "compact", "webdancer")
    compact = prompt_messages("Who wrote Dune?", "2025-01-02", style="compact")
    assert compact[1]["content"].endswith("\n\nQuestion: Who wrote Dune?")
    assert "Current date" not in compact[0]["content"]  # the same text every day
    assert all(tag in compact[0]["content"] for tag in ("<think></think>", "<tool_call></tool_call>", "<answer>"))
    assert '"query"' in compact[1]["content"] and '"goal"' in compact[1]["content"]
    ours = prompt_messages("Who wrote Dune?", "2025-01-02")
    assert ours == [{"role": "system", "content": system_prompt("2025-01-02")},
                    {"role": "user", "content": user_prompt("Who wrote Dune?")}]
    assert 4 * len(compact[0]["content"] + compact[1]["content"]) < len(ours[0]["content"] + ours[1]["content"])
    with pytest.raises(ValueError, match="unknown prompt style 'terse'"):
        system_prompt(style="terse")
    with pytest.raises(config.ParamsError, match="agent.prompt"):
        params.from_dict({"agent": {"prompt": "terse"}})
    assert params.from_dict({"agent": {"prompt": "compact"}}).agent.prompt == "compact"


def test_webdancer_prompt_rebuilds_the_released_prompts_byte_for_byte():
    """`agent.prompt: webdancer`: the authors' system prompt and user template, read from their released trajectories,
    render every released record's first two messages exactly (its question and its date line)."""
    from wdlib import config, params
    from wdlib.agent import resolve_prompt
    from wdlib.react import PromptTemplate, prompt_messages, system_prompt
    from wdlib.trajectory import Trajectory

    cfg = params.from_dict({"agent": {"prompt": "webdancer"}})
    template = resolve_prompt(cfg)
    assert isinstance(template, PromptTemplate) and resolve_prompt(cfg) is template  # read once
    records = list(read_jsonl(SAMPLES))
    assert len(records) == 100
    for record in records:
        question = Trajectory.from_webdancer(record).question  # the importer's own reading of the question
        date = re.search(r"Current date: (\S+)$", record["messages"][0]["content"]).group(1)
        assert prompt_messages(question, date, template) == [
            {"role": m["role"], "content": m["content"]} for m in record["messages"][:2]]
    # not one of our own prompts, and the repository does not carry its text
    assert template.system_before_date != system_prompt("2025-01-01")[:-10]
    assert template.system_before_date.split("\n")[0] not in "".join(
        p.read_text() for p in (config.REPO_ROOT / "wdlib").rglob("*.py"))
    with pytest.raises(ValueError, match="read from the released trajectories"):
        prompt_messages("q", style="webdancer")


def test_webdancer_prompt_bad_files_are_clear_errors(tmp_path):
    from wdlib import params
    from wdlib.agent import resolve_prompt, webdancer_prompt

    lines = SAMPLES.read_text().splitlines()
    other = json.loads(lines[1])
    other["messages"][0]["content"] = other["messages"][0]["content"].replace("Master", "Expert")
    with pytest.raises(ValueError, match="2 system prompts and 1 user templates"):
        webdancer_prompt("\n".join([lines[0], json.dumps(other)]))
    with pytest.raises(ValueError, match=r"x.jsonl:2: not a trajectory"):
        webdancer_prompt(lines[0] + "\n{oops", source="x.jsonl")
    no_date = json.loads(lines[0])
    no_date["messages"][0]["content"] += " (today)"
    with pytest.raises(ValueError, match="does not end with 'Current date: YYYY-MM-DD'"):
        webdancer_prompt(json.dumps(no_date))
    cfg = params.from_dict({"agent": {"prompt": "webdancer", "webdancer_prompt_file": str(tmp_path / "none.jsonl")}})
    with pytest.raises(FileNotFoundError, match="agent.webdancer_prompt_file"):
        resolve_prompt(cfg)
    assert resolve_prompt(params.from_dict({"agent": {"prompt": "compact"}})) == "compact"


# ------------------------------------------------------------------ the ReAct loop, scripted model on loopback
import asyncio  # noqa: E402

from openai_loopback import LoopbackOpenAI, completion  # noqa: E402
from wdlib.agent import run_agent, run_many  # noqa: E402
from wdlib.react import FINAL_ANSWER_INSTRUCTION, system_prompt, user_prompt  # noqa: E402
from wdlib.llm import OpenAIClient  # noqa: E402

SEARCH = '<think>Search first.</think>\n<tool_call>\n{"name": "search", "arguments": {"query": "dune author"}}\n</tool_call>'
VISIT = ('<think>Read the page.</think>\n<tool_call>\n{"name": "visit", "arguments": '
         '{"url": "https://en.wikipedia.org/wiki/Dune_(novel)", "goal": "author"}}\n</tool_call>')
ANSWER = "<think>Verified twice.</think>\n<answer>Frank Herbert</answer>"
BROKEN = '<think>Call it.</think>\n<tool_call>\n{"name": "search", "arguments": {"query": ["x"]\n</tool_call>'


class RecordingToolbox:
    """A small toolbox with the real Toolbox's contract (`async call(name, arguments) -> str`)."""

    def __init__(self, latency: float = 0.0, fail: bool = False):
        self.calls, self.latency, self.fail = [], latency, fail

    async def call(self, name, arguments):
        self.calls.append((name, arguments))
        await asyncio.sleep(self.latency)
        if self.fail:
            raise ConnectionError("search backend down")
        return f"result of {name} for {json.dumps(arguments, sort_keys=True)}"


def scripted(turns_by_question: dict[str, list[str]], **completion_kwargs):
    """A handler that replies with the next scripted turn of the question's script (the turn index is the number
    of assistant messages already in the conversation); usage grows with the conversation like a real server's."""

    def handler(body):
        messages = body["messages"]
        question = messages[1]["content"].rsplit("User: ", 1)[-1]
        script = turns_by_question[question]
        k = sum(m["role"] == "assistant" for m in messages)
        text = script[min(k, len(script) - 1)]
        prompt_tokens = sum(len(m["content"]) for m in messages) // 4
        return 200, completion(text, prompt_tokens=prompt_tokens, completion_tokens=len(text) // 4 + 1,
                               **completion_kwargs)

    return handler


def test_run_agent_search_visit_answer():
    toolbox = RecordingToolbox()
    with LoopbackOpenAI(scripted({"Who wrote Dune?": [SEARCH, VISIT, ANSWER]})) as server:
        client = OpenAIClient("scripted", server.base_url)
        traj = asyncio.run(run_agent("Who wrote Dune?", client, toolbox, gold="Frank Herbert", qa_id="q1",
                                     sampling={"temperature": 0.6}, max_turns=5))
    assert traj.finish_reason == "answer" and traj.prediction == "Frank Herbert" and traj.turns == 3
    assert [m["role"] for m in traj.messages] == ["system", "user", "assistant", "user", "assistant", "user",
                                                  "assistant"]
    assert traj.messages[2]["content"] == SEARCH  # the stop string the server dropped is back
    assert toolbox.calls == [("search", {"query": ["dune author"]}),
                             ("visit", {"url": ["https://en.wikipedia.org/wiki/Dune_(novel)"], "goal": "author"})]
    assert traj.tool_calls == [{"name": n, "arguments": a} for n, a in toolbox.calls]
    obs = traj.messages[3]["content"]
    assert obs.startswith("<tool_response>\n") and obs.endswith("\n</tool_response>") and "dune author" in obs
    assert traj.qa_id == "q1" and traj.gold == "Frank Herbert" and traj.model == "scripted"
    assert traj.sampling["temperature"] == 0.6 and traj.tokens is None
    assert traj.usage["prompt_tokens"] > 0 and traj.usage["completion_tokens"] > 0
    assert set(traj.timings) == {"model_s", "tool_s", "total_s"} and traj.timings["total_s"] >= traj.timings["model_s"]
    body = server.requests[0][1]
    assert body["stop"] == ["</tool_call>", "</answer>"] and body["temperature"] == 0.6
    # every turn of our own trajectory passes the same parser that checks WebDancer's
    assert all(parse_turn(t).ok for t in traj.assistant_turns)


def test_run_agent_starts_from_the_chosen_prompt_style():
    toolbox = RecordingToolbox()
    compact_script = {"Who wrote Dune?": [SEARCH, ANSWER]}

    def handler(body):  # the compact prompt ends in "Question: ..." rather than "User: ..."
        question = body["messages"][1]["content"].rsplit("Question: ", 1)[-1]
        k = sum(m["role"] == "assistant" for m in body["messages"])
        return 200, completion(compact_script[question][k])

    with LoopbackOpenAI(handler) as server:
        traj = asyncio.run(run_agent("Who wrote Dune?", OpenAIClient("scripted", server.base_url), toolbox,
                                     prompt="compact", max_turns=3))
    from wdlib.react import prompt_messages

    assert traj.messages[:2] == prompt_messages("Who wrote Dune?", style="compact")
    assert traj.sampling["prompt"] == "compact" and traj.prediction == "Frank Herbert"
    assert server.requests[0][1]["messages"][:2] == traj.messages[:2]


def test_run_agent_with_the_webdancer_prompt_sends_the_released_prompts():
    from wdlib import params
    from wdlib.agent import resolve_prompt

    template = resolve_prompt(params.from_dict({"agent": {"prompt": "webdancer"}}))
    toolbox = RecordingToolbox()
    with LoopbackOpenAI(lambda body: (200, completion(ANSWER))) as server:
        traj = asyncio.run(run_agent("Who wrote Dune?", OpenAIClient("scripted", server.base_url), toolbox,
                                     prompt=template, date="2025-07-18", max_turns=2))
    sent = server.requests[0][1]["messages"]
    assert sent[0]["content"] == template.system_before_date + "2025-07-18"
    assert sent[1]["content"] == template.user_before_question + "Who wrote Dune?"
    assert traj.sampling["prompt"] == "webdancer" and json.dumps(traj.to_dict())  # the record stays JSON


def test_malformed_turn_gets_error_observation_and_counts():
    with LoopbackOpenAI(scripted({"q": [BROKEN, "no tags at all", ANSWER]})) as server:
        traj = asyncio.run(run_agent("q", OpenAIClient("m", server.base_url), RecordingToolbox(), max_turns=5))
    assert traj.turns == 3 and traj.finish_reason == "answer" and traj.tool_calls == []
    first, second = traj.messages[3]["content"], traj.messages[5]["content"]
    assert "Format error: tool call is not valid JSON" in first
    assert "Format error: no <think>" in second
    # the model saw the error message in its next request
    assert "not valid JSON" in server.requests[1][1]["messages"][-1]["content"]


def test_malformed_turns_in_a_row_end_the_episode_when_asked():
    script = {"q": [BROKEN, SEARCH, "no tags at all", BROKEN, ANSWER], "p": ["prose, no format"]}
    with LoopbackOpenAI(scripted(script)) as server:
        client = OpenAIClient("m", server.base_url)
        ended = asyncio.run(run_agent("q", client, RecordingToolbox(), max_turns=8, max_format_errors=2))
        recovered = asyncio.run(run_agent("q", client, RecordingToolbox(), max_turns=8, max_format_errors=3))
        unlimited = asyncio.run(run_agent("p", client, RecordingToolbox(), max_turns=4))
        first = asyncio.run(run_agent("p", client, RecordingToolbox(), max_turns=4, max_format_errors=1))
    # one malformed turn, then a search resets the count; the 2nd malformed turn in a row ends it, unanswered
    assert ended.finish_reason == "format_errors" and ended.turns == 4 and ended.prediction is None
    assert ended.messages[-1]["role"] == "assistant" and len(ended.tool_calls) == 1
    assert ended.sampling["max_format_errors"] == 2
    assert recovered.finish_reason == "answer" and recovered.turns == 5
    assert unlimited.finish_reason == "max_turns" and unlimited.turns == 4  # None: the budget decides, as before
    assert first.finish_reason == "format_errors" and first.turns == 1  # WebDancer's rule: no tool call ends it


def test_turn_budget_forces_one_final_answer_turn():
    with LoopbackOpenAI(scripted({"q": [SEARCH, SEARCH, SEARCH, ANSWER]})) as server:
        traj = asyncio.run(run_agent("q", OpenAIClient("m", server.base_url), RecordingToolbox(), max_turns=4))
    assert traj.turns == 4 and len(traj.tool_calls) == 3
    assert traj.finish_reason == "max_turns" and traj.prediction == "Frank Herbert"  # answered when forced
    users = [m["content"] for m in traj.messages[2:] if m["role"] == "user"]
    assert [FINAL_ANSWER_INSTRUCTION in u for u in users] == [False, False, True]

    with LoopbackOpenAI(scripted({"q": [SEARCH]})) as server:  # never answers: stops after the forced turn
        traj = asyncio.run(run_agent("q", OpenAIClient("m", server.base_url), RecordingToolbox(), max_turns=3))
    assert traj.turns == 3 and traj.finish_reason == "max_turns" and traj.prediction is None
    assert len(server.requests) == 3


def test_token_budget_forces_final_turn():
    script = {"q": [SEARCH] * 20 + [ANSWER]}
    with LoopbackOpenAI(scripted(script)) as server:
        client = OpenAIClient("m", server.base_url)
        roomy = asyncio.run(run_agent("q", client, RecordingToolbox(), max_turns=4, max_total_tokens=100_000))
        tight = asyncio.run(run_agent("q", client, RecordingToolbox(), max_turns=50, max_total_tokens=1200,
                                      sampling={"max_new_tokens": 200}))
    assert roomy.finish_reason == "max_turns"
    assert tight.finish_reason == "max_tokens" and 1 < tight.turns < 20
    assert FINAL_ANSWER_INSTRUCTION in tight.messages[-2]["content"]
    assert tight.usage["context_tokens"] <= 1200


def test_long_observation_is_cut_to_the_context():
    class HugeToolbox:
        async def call(self, name, arguments):
            return "word " * 50_000

    with LoopbackOpenAI(scripted({"q": [SEARCH, ANSWER]})) as server:
        traj = asyncio.run(run_agent("q", OpenAIClient("m", server.base_url), HugeToolbox(), max_total_tokens=4000,
                                     sampling={"max_new_tokens": 100}))
    obs = traj.messages[3]["content"]
    assert "[... cut: the context is full]\n</tool_response>" in obs and FINAL_ANSWER_INSTRUCTION in obs
    assert traj.finish_reason == "max_tokens" and traj.prediction == "Frank Herbert"
    # the server saw a conversation within the budget (its prompt_tokens count is len/4, our estimate len/3)
    assert sum(len(m["content"]) for m in server.requests[1][1]["messages"]) / 3 < 4000


def test_reasoning_content_becomes_think():
    with LoopbackOpenAI(scripted({"q": ["<answer>42</answer>"]}, reasoning_content="Deep thought.")) as server:
        traj = asyncio.run(run_agent("q", OpenAIClient("m", server.base_url), RecordingToolbox()))
    assert traj.messages[-1]["content"] == "<think>\nDeep thought.\n</think>\n<answer>42</answer>"
    assert traj.prediction == "42" and parse_turn(traj.messages[-1]["content"]).ok


def test_scripted_model_with_real_toolbox(toolbox):
    """Real search and visit on the local web: the scripted model searches, then visits the first result."""

    def handler(body):
        messages = body["messages"]
        k = sum(m["role"] == "assistant" for m in messages)
        if k == 0:
            text = ('<think>Search the docs.</think>\n<tool_call>\n{"name": "search", "arguments": '
                    '{"query": ["os.path.join"]}}\n</tool_call>')
        elif k == 1:
            url = re.search(r"\]\((https?://[^)]+)\)", messages[-1]["content"]).group(1)
            text = (f'<think>Read it.</think>\n<tool_call>\n{{"name": "visit", "arguments": {{"url": "{url}", '
                    f'"goal": "what os.path.join does"}}}}\n</tool_call>')
        else:
            text = "<think>Enough.</think>\n<answer>It joins path components.</answer>"
        return 200, completion(text)

    with LoopbackOpenAI(handler) as server:
        traj = asyncio.run(run_agent("What does os.path.join do?", OpenAIClient("m", server.base_url), toolbox))
    assert traj.finish_reason == "answer" and [c["name"] for c in traj.tool_calls] == ["search", "visit"]
    search_obs, visit_obs = traj.observations
    assert search_obs.startswith("<tool_response>\nA Google search for 'os.path.join' found")
    assert "## Web Results\n1. [" in search_obs
    assert visit_obs.startswith("<tool_response>\nThe useful information in ") and "Evidence in page" in visit_obs
    assert visit_obs.endswith("\n\n</tool_response>")  # WebDancer's layout: the observation ends with a newline


def test_backend_failure_and_tool_failure_do_not_raise():
    with LoopbackOpenAI(lambda body: (500, {"error": {"message": "boom"}})) as server:
        traj = asyncio.run(run_agent("q", OpenAIClient("m", server.base_url, max_retries=1, backoff_s=0.01),
                                     RecordingToolbox()))
    assert traj.finish_reason == "error" and "giving up" in traj.error and traj.turns == 0
    with LoopbackOpenAI(scripted({"q": [SEARCH, ANSWER]})) as server:
        traj = asyncio.run(run_agent("q", OpenAIClient("m", server.base_url), RecordingToolbox(fail=True)))
    assert traj.finish_reason == "answer" and "search backend down" in traj.messages[3]["content"]


# ------------------------------------------------------------------ run_many
def test_run_many_concurrent_resumable(tmp_path):
    from wdlib.trajectory import QAPair, append_jsonl, done_ids, load_trajectories

    qa = [QAPair(question=f"question {i}", answer=str(i)) for i in range(6)]
    script = {q.question: [SEARCH, f"<think>ok</think><answer>{i}</answer>"] for i, q in enumerate(qa)}
    path = tmp_path / "traj.jsonl"

    async def slow(body):
        await asyncio.sleep(0.05)
        return scripted(script)(body)

    with LoopbackOpenAI(slow) as server:
        client = OpenAIClient("m", server.base_url, concurrency=64)
        first = asyncio.run(run_many(qa[:4], client, RecordingToolbox(latency=0.05), concurrency=8, samples=2,
                                     on_result=lambda t: append_jsonl(path, [t]), progress=False))
        assert server.max_in_flight >= 4  # trajectories really overlap
        # resume: the 8 finished ones are skipped, only the new questions run
        n_before = len(server.requests)
        second = asyncio.run(run_many([q.to_dict() for q in qa], client, RecordingToolbox(), concurrency=8,
                                      samples=2, skip_ids=done_ids(path),
                                      on_result=lambda t: append_jsonl(path, [t]), progress=False))
        assert len(server.requests) - n_before == 2 * 2 * 2  # 2 questions × 2 samples × 2 turns
    assert len(first) == 8 and len(second) == 4
    assert [(t.qa_id, t.sample) for t in first] == [(q.id, k) for q in qa[:4] for k in range(2)]  # input order
    saved = load_trajectories(path)
    assert len(saved) == 12 and len({t.id for t in saved}) == 12
    assert all(t.prediction == t.gold for t in saved)


def test_run_many_accepts_dicts_with_samples_and_strings():
    with LoopbackOpenAI(scripted({"a": [ANSWER], "b": [ANSWER]})) as server:
        out = asyncio.run(run_many([{"question": "a", "gold": "Frank Herbert", "id": "qa-a", "samples": 3}, "b"],
                                   OpenAIClient("m", server.base_url), RecordingToolbox(), progress=False))
    assert [(t.qa_id, t.sample) for t in out[:3]] == [("qa-a", 0), ("qa-a", 1), ("qa-a", 2)]
    assert out[3].question == "b" and out[3].gold is None and len(out) == 4
    with pytest.raises(ValueError, match="question"):
        asyncio.run(run_many([{"q": "x"}], OpenAIClient("m", "http://127.0.0.1:9/v1"), RecordingToolbox()))


# ------------------------------------------------------------------ token level, with the embedded tiny model
@pytest.fixture(scope="module")
def tiny():
    import torch

    from wdlib.llm import TransformersClient

    torch.set_num_threads(1)  # with other jobs on the 2 cores, 2 threads spin-wait: 5-10x slower than 1
    return TransformersClient("embedded:smollm2-135m", max_new_tokens=24, device="cpu")


def _runs(mask):
    start = 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            yield mask[start], start, i
            start = i


@pytest.mark.slow
def test_tiny_model_end_to_end_on_local_web(tiny, toolbox, tmp_path):
    """The embedded model against the real Toolbox (local web on loopback): two rollouts at once (one batched
    generate per turn), one turn-limited and written to JSONL by run_many, one token-limited; the token-level
    transcript must be exactly the chat template's rendering of the messages."""
    from wdlib.trajectory import append_jsonl, load_trajectories

    tok = tiny.tokenizer
    prompt_len = len(tiny.encode_prompt([{"role": "system", "content": system_prompt()},
                                         {"role": "user", "content": user_prompt("What is 2 plus 2?")}]))
    sampling = {"temperature": 1.0, "max_new_tokens": 12, "logprobs": True}
    path = tmp_path / "trajectories.jsonl"

    async def go():
        return await asyncio.gather(
            run_many([{"question": "What is 1 plus 1?", "gold": "2"}], tiny, toolbox, max_turns=2, sampling=sampling,
                     on_result=lambda t: append_jsonl(path, [t]), progress=False),
            run_agent("What is 2 plus 2?", tiny, toolbox, max_turns=10, max_total_tokens=prompt_len + 90,
                      sampling=sampling))

    before = len(tiny._batcher.batch_sizes)
    (by_turns,), by_tokens = asyncio.run(go())
    saved = load_trajectories(path)
    assert [t.to_dict() for t in saved] == [by_turns.to_dict()] and saved[0].model == tiny.model_name
    assert tiny._batcher.batch_sizes[before] == 2  # both first turns in one generate
    assert by_turns.turns <= 2 and by_turns.finish_reason in ("answer", "max_turns")
    assert by_tokens.finish_reason in ("answer", "max_tokens")
    assert by_tokens.usage["context_tokens"] <= prompt_len + 90
    for traj in (by_turns, by_tokens):
        t = traj.tokens
        assert len(t["completion_ids"]) == len(t["env_mask"]) == len(t["logprobs"])
        assert t["prompt_ids"] == tiny.encode_prompt(traj.messages[:2])
        full = tok.decode(t["prompt_ids"] + t["completion_ids"], skip_special_tokens=False)
        rendered = tok.apply_chat_template(traj.messages, tokenize=False)
        assert rendered.startswith(full) and rendered[len(full):] in ("\n", "<|im_end|>\n")
        # each model segment is one assistant message (+ <|im_end|>), each observation segment one user turn
        assistant, observations = iter(traj.assistant_turns), iter(traj.observations)
        for mask, a, b in _runs(t["env_mask"]):
            text = tok.decode(t["completion_ids"][a:b], skip_special_tokens=False)
            if mask == 1:
                assert text.removesuffix("<|im_end|>") == next(assistant)
                assert all(lp <= 0 for lp in t["logprobs"][a:b])
            else:
                assert text == f"\n<|im_start|>user\n{next(observations)}<|im_end|>\n<|im_start|>assistant\n"
        assert traj.usage["context_tokens"] == len(t["prompt_ids"]) + len(t["completion_ids"])


def test_template_that_opens_think_in_the_generation_prompt(toolbox):
    """QwQ-style templates end the generation prompt with `<think>\\n`: the model's text continues it, so the
    message must hold the whole `<think>…` turn and every later prompt must re-open it, as the template renders."""
    from wdlib.llm import Reply
    from wdlib.models import load_tokenizer

    tok = load_tokenizer("embedded:smollm2-135m")
    tok.chat_template = tok.chat_template.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'")
    assert tok.apply_chat_template([{"role": "user", "content": "q"}], add_generation_prompt=True,
                                   tokenize=False).endswith("<|im_start|>assistant\n<think>\n")
    script = iter(['look it up\n</think>\n<tool_call>\n{"name": "search", "arguments": {"query": ["os.getcwd"]}}\n'
                   "</tool_call>", "found it\n</think>\n<answer>os.getcwd</answer>"])
    fed = []

    class ScriptedTokenClient:
        token_level, tokenizer, model_name = True, tok, "scripted"

        def encode_prompt(self, messages):
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return tok(text, add_special_tokens=False)["input_ids"]

        async def generate(self, ids, **sampling):
            fed.append(tok.decode(ids))
            text = next(script)
            return Reply(text=text, token_ids=tok(text, add_special_tokens=False)["input_ids"], prompt_tokens=len(ids),
                         completion_tokens=1, finish_reason="stop")

    traj = asyncio.run(run_agent("Which function returns the working directory?", ScriptedTokenClient(), toolbox,
                                 max_turns=4))
    assert traj.prediction == "os.getcwd" and all(parse_turn(t).error is None for t in traj.assistant_turns)
    assert traj.assistant_turns[0].startswith("<think>\nlook it up")
    assert fed[1].endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n<think>\n")
    rendered = tok.apply_chat_template(traj.messages, tokenize=False)
    full = tok.decode(traj.tokens["prompt_ids"] + traj.tokens["completion_ids"])
    assert rendered.startswith(full.removesuffix("<|im_end|>"))

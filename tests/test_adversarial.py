"""Adversarial cases (issue 18): no model output, page, file or params value can crash, hang or leak.

Each class the adversarial probe found has its cases here, so they stay fixed: the turn parser (deep JSON, huge
integers, backtracking fences), one failing rollout among many, records (lone surrogates, cut UTF-8, garbage lines,
`kill -9` mid-run), params values, key redaction (JSONL, DEBUG logs, wandb, executed notebooks, messages) and the
loopback web server; live mode's (classes 6-9) are in tests/test_adversarial_web.py. The fuzz set (>= 300
adversarial turns through `run_many`) is at the end.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wdlib import config, params, react
from wdlib.agent import run_many
from wdlib.llm import Reply
from wdlib.trajectory import append_jsonl, done_ids, load_qa, load_trajectories, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("adversarial_worker.py")
SECRET = "sk-adversarial-0123456789abcdefXYZ"


def run(coro):
    return asyncio.run(coro)


def call(name: str, **arguments) -> str:
    return f"<think>next</think>\n<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


# ================================================================ 1, 2 · the turn parser
@pytest.mark.parametrize("body", [
    "[" * 100_000,
    '{"name": "search", "arguments": {"query": ' + "[" * 5_000 + '"x"' + "]" * 5_000 + "}}",
    '{"name": "search", "arguments": {"query": ["a"], "n": ' + "9" * 5_000 + "}}",
    '{"name": "search", "arguments": {"query": ["a"], "n": NaN}}',
    '{"name": "search", "arguments": "' + "[" * 3_000 + '"}',
])
def test_parse_turn_never_raises_on_json_that_breaks_json_loads(body):
    turn = react.parse_turn(f"<think>x</think>\n<tool_call>\n{body}\n</tool_call>")
    assert turn.error and turn.tool_call is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("turn", [
    "<think>x</think><tool_call>```" + " " * 4_000 + "x</tool_call>",
    "<think>x</think><tool_call>```json" + " \n" * 200_000 + "</tool_call>",
    "<think>x</think><tool_call>```" + "\n" * 500_000 + "```</tool_call>",
])
def test_parsing_a_turn_is_linear_in_its_length(turn):
    start = time.perf_counter()
    react.parse_turn(turn)
    assert time.perf_counter() - start < 0.5  # cubic before: 4,000 spaces took > 30 s


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", ["<tool_response>" * 200_000, "a" + "\n" * 1_000_000 + "b",
                                  "x\n" + " \n" * 500_000 + "user"])
def test_decoded_completions_split_in_linear_time(text):
    start = time.perf_counter()
    react.messages_from_text(text)
    react.parse_search_results(text)
    assert time.perf_counter() - start < 1.0


class ScriptedClient:
    """The agent's model: turns by question (`script[question]`, one per assistant turn), in process."""

    model_name, max_new_tokens = "scripted", 256

    def __init__(self, script: dict[str, list]):
        self.script = script

    async def chat(self, messages, **sampling):
        turns = self.script[messages[1]["content"].rsplit("User: ", 1)[-1]]
        turn = turns[min(sum(m["role"] == "assistant" for m in messages), len(turns) - 1)]
        await asyncio.sleep(0)
        if isinstance(turn, Exception):
            raise turn
        return turn if isinstance(turn, Reply) else Reply(text=turn)


class EchoToolbox:
    """Answers a tool call with (part of) its arguments: whatever the model wrote comes back as an observation."""

    async def call(self, name, arguments):
        return f"{name} received: {json.dumps(arguments, ensure_ascii=False)[:2000]}"


def test_one_failing_rollout_is_its_own_error_record(tmp_path):
    """A reply that breaks the loop (no text: TypeError inside run_agent) ended the TaskGroup: 0 of 8 saved."""
    good = [call("search", query=["harbour"]), "<think>ok</think>\n<answer>32 metres</answer>"]
    script = {f"question {i}": good for i in range(7)}
    script["question 7"] = [call("search", query=["x"]), Reply(text=None)]
    path = tmp_path / "t.jsonl"
    items = [{"question": q, "answer": "32 metres"} for q in script]
    out = run(run_many(items, ScriptedClient(script), EchoToolbox(), concurrency=8, progress=False,
                       on_result=lambda t: append_jsonl(path, [t])))
    saved = {t.question: t for t in load_trajectories(path)}
    assert len(out) == len(saved) == 8
    assert saved["question 7"].finish_reason == "error" and "TypeError" in saved["question 7"].error
    assert len(saved["question 7"].messages) == 4  # the conversation up to the failure is kept
    assert all(saved[f"question {i}"].prediction == "32 metres" for i in range(7))


def test_on_result_failures_do_not_stop_the_others(tmp_path):
    script = {f"q{i}": ["<think>ok</think>\n<answer>a</answer>"] for i in range(6)}
    saved = []

    def save(t):
        if t.question == "q3":
            raise OSError("disk full")
        saved.append(t.question)

    with pytest.raises(RuntimeError, match="on_result failed for 1 of 6"):
        run(run_many(list(script), ScriptedClient(script), EchoToolbox(), concurrency=3, on_result=save,
                     progress=False))
    assert sorted(saved) == ["q0", "q1", "q2", "q4", "q5"]


# ================================================================ 3, 4, 5 · records
def test_a_lone_surrogate_is_written_and_reads_back(tmp_path):
    path = tmp_path / "r.jsonl"
    records = [{"id": "a", "text": "fine"}, {"id": "b", "text": "half a pair: \ud800 and \udfff"},
               {"id": "c", "text": "after"}]
    assert append_jsonl(path, records) == 3
    back = list(read_jsonl(path))
    assert [r["id"] for r in back] == ["a", "b", "c"] and back[1]["text"] == records[1]["text"]
    path.read_bytes().decode("utf-8")  # the file itself is valid UTF-8


def test_records_of_any_content_are_written(tmp_path):
    path = tmp_path / "r.jsonl"
    deep: list = []
    node = deep
    for _ in range(5_000):
        node.append([])
        node = node[0]
    append_jsonl(path, [{"id": "deep", "v": deep}, {"id": "odd", "v": {1: Path("/x"), "s": {3}}},
                        {"id": "big", "v": 10 ** 5_000}, {"id": "after"}])
    assert [r["id"] for r in read_jsonl(path)] == ["deep", "odd", "big", "after"]


def test_resume_reads_cut_and_invalid_utf8(tmp_path):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, [{"id": "ü1", "question": "Größe?"}, {"id": "ü2", "question": "価格?"}])
    line = json.dumps({"id": "ü3", "question": "終わり"}, ensure_ascii=False).encode()
    with open(path, "ab") as f:  # a writer killed inside a multi-byte character
        f.write(line[: line.index("終".encode()) + 1])
    assert done_ids(path) == {"ü1", "ü2"}
    with open(path, "ab") as f:  # invalid UTF-8 inside an otherwise fine record
        f.write(b'\n{"id": "bad\xff\xfebytes", "question": "q"}\n')
    assert len(done_ids(path)) == 3 and len(load_qa(path)) == 0
    append_jsonl(path, [{"id": "ü4", "question": "next"}])  # the cut line is ended, not joined
    assert "ü4" in done_ids(path)


def test_garbage_lines_do_not_crash_resume(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    good = {"id": "t1", "qa_id": "q1", "question": "Q?", "messages": [{"role": "user", "content": "Q?"}]}
    garbage = ["42", "null", '"x"', "[1]", "{}", '{"id": ["a"]}', '{"qa_id": {"x": 1}}', '{"question": 5}',
               '{"question": "q", "messages": "not a list"}', '{"question": "q", "messages": [1]}',
               '{"question": "q", "messages": [], "sample": "zero"}', "[" * 100_000, "9" * 5_000, "NaN"]
    path.write_text("\n".join([json.dumps(good)] + garbage) + "\n")
    assert done_ids(path) == {"t1"} and done_ids(path, "qa_id") == {"q1"}
    assert [t.id for t in load_trajectories(path)] == ["t1"]
    assert load_qa(path) == []
    assert "skipped" in caplog.text


def test_resume_after_kill_9_keeps_every_completed_record_once(tmp_path):
    """20 runs of a real process killed at random moments, then one to the end: non-ASCII records, each once."""
    path, n, rng, completed = tmp_path / "runs.jsonl", 40, random.Random(18), set()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's wdlib, not whichever one is installed
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, str(WORKER), str(path), str(n)], cwd=ROOT, stdout=subprocess.PIPE,
                                text=True, env=env)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.8))
        proc.kill()
        completed |= set(proc.communicate(timeout=30)[0].split())
    last = subprocess.run([sys.executable, str(WORKER), str(path), str(n)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert last.returncode == 0, last.stderr[-2000:]
    completed |= set(last.stdout.split()[1:])
    ids = [r["id"] for r in read_jsonl(path)]
    assert len(ids) == len(set(ids)) == n  # none twice, none missing
    assert completed <= set(ids)  # every record a run finished writing is still there
    assert all("答え" in r["prediction"] for r in read_jsonl(path))


# ================================================================ 10, 11, 12 · params
def _params(tmp_path, text: str, name: str = "p.yaml", base: str | None = "ci.yaml") -> Path:
    path = tmp_path / name
    head = f"extends: {config.PARAMS_DIR / base}\n" if base else ""
    path.write_text(head + text)
    return path


def test_an_unknown_key_in_a_parent_names_the_parent(tmp_path):
    parent = _params(tmp_path, "dapo: {epsilon_hihg: 0.3}\n", "parent.yaml")
    child = _params(tmp_path, "run: {name: child}\n", "child.yaml", base=None)
    child.write_text(f"extends: {parent}\n" + child.read_text())
    with pytest.raises(config.ParamsError) as e:
        params.load(child)
    assert str(e.value).startswith(f"{parent}: dapo.epsilon_hihg: unknown key")


BAD_VALUES = [
    ("dapo: {num_generations: 4, per_device_train_batch_size: 6}", "dapo.per_device_train_batch_size"),
    ("web: {encyclopedia_max_pages: -5}", "web.encyclopedia_max_pages"),
    ("eval: {limit: 0}", "eval.limit"),
    ("trajectories: {max_questions: 0}", "trajectories.max_questions"),
    ("dapo: {max_questions: -1}", "dapo.max_questions"),
    ("dapo: {epsilon: 0.3, epsilon_high: 0.2}", "dapo.epsilon_high"),
    ("models: {policy: {max_new_tokens: 4096, context_length: 2048}}", "models.policy.max_new_tokens"),
    ("synthesis: {e2hqa: {hops: 1, min_hops: 2}}", "synthesis.e2hqa.min_hops"),
    ("web: {sites: []}", "web.sites"),
    ("web: {sites: [python-docs, myspace]}", "web.sites.1"),
    ("dapo: {max_refills: true}", "dapo.max_refills"),
    ("sft: {packing: 1}", "sft.packing"),
    ("sft: {max_length: '2048'}", "sft.max_length"),
    ("dapo: {learning_rate: 1e-6}", "dapo.learning_rate"),
    ("dapo:\n  epsilon: 0.2\n  epsilon: 0.3\n", "epsilon (line 4)"),
    ("models: {policy: {api_key_env: sk-proj-AbCdEf0123456789AbCdEf}}", "models.policy.api_key_env"),
    ("models: {judge: {api_key_env: sk_live_0123456789abcdefABCDEF}}", "models.judge.api_key_env"),
    ("models: {policy: {extra: {api_key: abcdef0123456789secret}}}", "models.policy.extra.api_key"),
    ("models: {policy: {extra: {default_headers: {Authorization: Bearer abcdef0123456789}}}}",
     "models.policy.extra.default_headers.Authorization"),
    ("models: {policy: {base_url: 'https://user:hunter2pass@api.example.com/v1'}}", "models.policy.base_url"),
    ("models: {policy: {base_url: 'https://api.example.com/v1?api_key=abcdef0123456789'}}",
     "models.policy.base_url"),
    ("sft: {trainer_kwargs: {hub_token: hf_abcdefABCDEF0123456789}}", "sft.trainer_kwargs.hub_token"),
]


@pytest.mark.parametrize("text,key", BAD_VALUES, ids=[k for _, k in BAD_VALUES])
def test_bad_params_values_are_rejected_with_file_and_key(tmp_path, text, key):
    path = _params(tmp_path, text + "\n")
    with pytest.raises(config.ParamsError) as e:
        params.load(path)
    message = str(e.value)
    assert message.startswith(f"{path}: {key}"), message
    for secret in ("AbCdEf0123456789", "0123456789abcdef", "hunter2pass", "abcdef0123456789"):
        assert secret not in message


def test_values_that_are_fine_stay_fine(tmp_path):
    cfg = params.load(_params(tmp_path, "models: {policy: {api_key_env: OPENAI_API_KEY, extra: {max_tokens_param: "
                                        "max_tokens}}}\nsft: {trainer_kwargs: {pad_token: '<|endoftext|>'}}\n"))
    assert cfg.models.policy.api_key_env == "OPENAI_API_KEY"


def test_yaml_aliases_cannot_blow_up_a_message(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nweb: {sites: *a8}\n")
    start = time.perf_counter()
    with pytest.raises(config.ParamsError) as e:
        params.load(path)
    assert len(str(e.value)) < 500 and time.perf_counter() - start < 5 and "aliases" in str(e.value)


def test_the_site_names_params_accept_are_the_sites_the_web_builds():
    from wdlib import sites

    assert set(config.SITES) == set(sites.KNOWN_SITES)


# ================================================================ 11, 13 · keys never reach an artifact
class _SerpApi(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = json.dumps({"search_metadata": {"status": "Success"}, "organic_results": [
            {"position": 1, "title": "Harbour", "link": "https://example.org/h", "snippet": "The harbour."}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_serpapi_key_is_not_in_debug_logs(tmp_path, monkeypatch, caplog):
    from wdlib.search import SerpApiSearch

    monkeypatch.setenv("SERPAPI_API_KEY", SECRET)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SerpApi)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        caplog.set_level(logging.DEBUG)
        backend = SerpApiSearch(tmp_path / "cache", base_domain=f"http://127.0.0.1:{srv.server_address[1]}")
        assert run(backend.results("harbour"))[0]["title"] == "Harbour"
    finally:
        srv.shutdown()
        srv.server_close()
    assert "/search" in caplog.text and "api_key" in caplog.text  # urllib3 did log the request URL at DEBUG
    assert SECRET not in caplog.text


def test_keys_echoed_into_errors_do_not_reach_jsonl(tmp_path, monkeypatch):
    from wdlib.llm import OpenAIClient

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("MY_ENDPOINT", "plain-name-but-a-key-42")  # a key under a name that does not say so
    OpenAIClient("m", "http://127.0.0.1:9/v1", "MY_ENDPOINT")  # reading a key registers it for redaction
    script = {"q": [RuntimeError(f"401 Unauthorized: you sent Authorization: Bearer {SECRET}")],
              "r": [call("search", query=["plain-name-but-a-key-42"]), "<think>k</think><answer>a</answer>"]}
    path = tmp_path / "t.jsonl"
    run(run_many(list(script), ScriptedClient(script), EchoToolbox(), on_result=lambda t: append_jsonl(path, [t]),
                 progress=False))
    text = path.read_text()
    assert "<redacted>" in text and SECRET not in text and "plain-name-but-a-key-42" not in text
    assert {t.question: t.finish_reason for t in load_trajectories(path)} == {"q": "error", "r": "answer"}


def test_wandb_config_holds_no_key(tmp_path, monkeypatch):
    from wdlib import tracking

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    cfg = params.load("ci.yaml")
    cfg.run.output_dir, cfg.wandb.mode = str(tmp_path), "offline"
    cfg.models.policy.extra = {"note": f"a value typed after load: {SECRET}"}  # past the load-time check
    wandb_run = tracking.init_wandb(cfg, "adversarial")
    wandb_run.finish()
    files = [p for p in (tmp_path / cfg.run.name / "wandb").rglob("*") if p.is_file()]
    assert any(b"a value typed after load: <redacted>" in p.read_bytes() for p in files)  # the config went in
    assert not [p for p in files if SECRET.encode() in p.read_bytes()]


@pytest.mark.timeout(300)
def test_executed_notebooks_and_stage_errors_hold_no_key(tmp_path, monkeypatch, capsys):
    import nbformat

    from wdlib import pipeline

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("params_file = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import os\nprint('key:', os.environ['OPENAI_API_KEY'])"),
                nbformat.v4.new_code_cell("raise RuntimeError('rejected ' + os.environ['OPENAI_API_KEY'])")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbdir / "01_leak.ipynb")
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", nbdir)
    params_path = _params(tmp_path, f"run: {{name: t, output_dir: {tmp_path / 'out'}}}\n")
    with pytest.raises(pipeline.StageFailed) as e:
        pipeline.run(params_path, stream_output=True)  # what the cells print reaches the terminal too
    executed = (tmp_path / "out" / "t" / "notebooks" / "01_leak.ipynb").read_text()
    assert "key: <redacted>" in executed and SECRET not in executed
    assert "rejected <redacted>" in str(e.value) and SECRET not in str(e.value)
    terminal = capsys.readouterr()
    assert "key: <redacted>" in terminal.out and SECRET not in terminal.out + terminal.err


# ================================================================ 14 · the loopback web server
def _raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_loopback_server_answers_bad_requests_and_drops_idle_connections(toolbox):
    from wdlib.webserver import LocalWebServer

    with LocalWebServer(toolbox.web, idle_timeout_s=0.5) as srv:
        for path in (b"/[::1", b"/[", b"/%ff%fe", b"/search?num=x&q=a"):
            answer = _raw_request(srv.port, b"GET " + path + b" HTTP/1.0\r\n\r\n")
            assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.0 404")), (path, answer[:80])
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as idle:  # says nothing
            assert idle.recv(1) == b""  # the server hung up
        assert time.perf_counter() - start < 3
        assert _raw_request(srv.port, b"GET /health HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")


# ================================================================ the fuzz set
def adversarial_turns(rng: random.Random) -> list[str]:
    """Turns a model (or an attacker writing into a page it echoes) can produce, from a few bytes to 1 MB."""
    def wrap(body: str) -> str:
        return f"<think>t</think>\n<tool_call>\n{body}\n</tool_call>"

    sizes = [1, 10, 1_000, 30_000, 1_000_000]
    q = '{"name": "search", "arguments": {"query": %s}}'
    makers = [
        lambda n: wrap("[" * n), lambda n: wrap('{"a":' * n), lambda n: wrap(q % ("[" * n + '"x"' + "]" * n)),
        lambda n: wrap(q % ("9" * n)), lambda n: wrap(q % ("1." + "0" * n + "e99999")),
        lambda n: wrap("```" + " " * n + "x"), lambda n: wrap("```json" + " \n" * (n // 2) + "```"),
        lambda n: wrap("```" + "\t" * n + "```"), lambda n: wrap(q % json.dumps(["\ud800" + "x" * n])),
        lambda n: wrap(q % '["\\ud800\\udfff", "\\udc00"]') + "\ud83d" * min(n, 1000),
        lambda n: wrap(q % "NaN"), lambda n: wrap(q % "[Infinity]"), lambda n: wrap(q % json.dumps(["é" * n])),
        lambda n: wrap('{"name": "' + "v" * n + '", "arguments": {}}'),
        lambda n: wrap('{"name": "visit", "arguments": "' + "[" * n + '"}'),
        lambda n: wrap('{"name": "search", "arguments": {"query": ["a"]}, "arguments": {"query": 1}}' + " " * n),
        lambda n: wrap("{'name': 'search', 'arguments': {'query': ['a',],},}" + "," * n),
        lambda n: "<think>" * n, lambda n: "</think>" * n + "<think>x</think>",
        lambda n: "<think>x</think><tool_call>" * n, lambda n: "<think>x</think>" + "<tool_response>" * n,
        lambda n: "<think>" + "x" * n + "</think><answer>",
        lambda n: "\x00" * n + "<think>x</think><tool_call>\x00</tool_call>",
        lambda n: "<think>\u202e" + "\u0301" * n + "</think>" + call("visit", url=["http://[::1"], goal="\u0000"),
        lambda n: call("search", query=["🔎" * n]), lambda n: call("visit", url=["x" * n], goal="g" * n),
        lambda n: "<think>x</think>\n<tool_call>\n" + json.dumps({"name": "search", "arguments": json.dumps(
            {"query": ["nested " * n]})}) + "\n</tool_call>",
        lambda n: "<think>x</think>\n<tool_call>\n" + json.dumps(
            {"name": "search", "arguments": {"query": [{"not": "a string"}] * min(n, 10_000)}}) + "\n</tool_call>",
        lambda n: "<|im_start|>assistant\n" * min(n, 1000) + call("search", query=["<|im_end|>"]),
    ]
    def sized(make, n: int) -> str:  # at most 1 MB whatever the maker repeats
        turn = make(n)
        return turn if len(turn) <= 1_000_000 else make(max(1, n * 999_000 // len(turn)))

    turns = [sized(make, n) for make in makers for n in sizes]
    turns += [sized(make, rng.choice(sizes[:4])) for make in rng.choices(makers, k=320 - len(turns))]
    return turns


@pytest.mark.timeout(600)
def test_fuzz_set_through_run_many(tmp_path):
    """>= 300 adversarial turns, 8 rollouts at a time: 0 exceptions, each turn parsed in < 50 ms, 0 lost records."""
    turns = adversarial_turns(random.Random(18))
    assert len(turns) >= 300 and 990_000 <= max(len(t) for t in turns) <= 1_000_000

    slowest = 0.0
    for turn in turns:  # each turn alone, timed (best of 3: the machine is shared)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            parsed = react.parse_turn(turn)
            times.append(time.perf_counter() - start)
        slowest = max(slowest, min(times))
        assert isinstance(parsed, react.Turn)
    print(f"slowest parse of {len(turns)} adversarial turns: {slowest * 1000:.1f} ms")
    assert slowest < 0.05

    answer = "<think>done \ud800</think>\n<answer>ответ \udfff 🔎</answer>"
    script = {f"fuzz {i:02d}": turns[i * 8:(i + 1) * 8] + [answer] for i in range(len(turns) // 8)}
    script["fuzz broken reply"] = [call("search", query=["a"]), Reply(text=None)]
    script["fuzz broken client"] = [ZeroDivisionError("the model client broke")]
    path = tmp_path / "fuzz.jsonl"
    out = run(run_many(list(script), ScriptedClient(script), EchoToolbox(), concurrency=8, max_turns=10,
                       max_total_tokens=10 ** 9, progress=False, on_result=lambda t: append_jsonl(path, [t])))
    saved = load_trajectories(path)
    assert len(out) == len(saved) == len(script) and {t.question for t in saved} == set(script)
    assert sum(t.turns for t in saved) >= 300
    reasons = {t.question: t.finish_reason for t in saved}
    assert reasons["fuzz broken reply"] == reasons["fuzz broken client"] == "error"
    assert all(reasons[q] == "answer" for q in script if q[5:7].isdigit())
    by_q = {t.question: t for t in saved}
    for t in out:  # what was written is what ran, lone surrogates and all
        assert by_q[t.question].messages == t.messages

"""LLM clients: the OpenAI client against a real loopback HTTP server; the transformers client on the tiny model."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from openai_loopback import LoopbackOpenAI, completion
from wdlib.config import ModelSpec
from wdlib.llm import OpenAIClient, Reply, TransformersClient, make_client

KEY = "sk-test-secret-123"


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("WDLIB_TEST_KEY", KEY)
    return "WDLIB_TEST_KEY"


def run(coro):
    return asyncio.run(coro)


# ------------------------------------------------------------------ OpenAI-compatible endpoint
def test_openai_chat_request_and_reply(api_key):
    with LoopbackOpenAI(lambda body: (200, completion("Hello there", reasoning_content="I think",
                                                      prompt_tokens=7, completion_tokens=3))) as server:
        client = OpenAIClient("m1", server.base_url, api_key)
        reply = run(client.chat([{"role": "user", "content": "hi"}], temperature=0.6, top_p=0.95, top_k=20,
                                max_new_tokens=33, stop=["</answer>"]))
    assert isinstance(reply, Reply)
    assert reply.text == "Hello there" and reply.reasoning_content == "I think"
    assert (reply.prompt_tokens, reply.completion_tokens, reply.finish_reason) == (7, 3, "stop")
    headers, body = server.requests[0]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert body["model"] == "m1" and body["max_tokens"] == 33 and body["stop"] == ["</answer>"]
    assert body["temperature"] == 0.6 and body["top_p"] == 0.95
    assert body["top_k"] == 20  # non-OpenAI sampling keys travel in the body (vLLM reads them)


def test_openai_stop_string_is_put_back(api_key):
    turn = '<think>x</think>\n<tool_call>\n{"name": "search", "arguments": {"query": ["a"]}}\n</tool_call>\nmore'
    with LoopbackOpenAI(lambda body: (200, completion(turn))) as server:
        client = OpenAIClient("m", server.base_url, api_key)
        reply = run(client.chat([{"role": "user", "content": "q"}], stop=["</tool_call>", "</answer>"]))
        assert server.requests[0][1]["stop"] == ["</tool_call>", "</answer>"]
        assert reply.text == turn[: turn.index("</tool_call>")] + "</tool_call>"
        plain = run(client.chat([{"role": "user", "content": "q"}]))  # no stop strings: nothing cut, nothing added
        assert plain.text == turn


def test_openai_length_finish(api_key):
    with LoopbackOpenAI(lambda body: (200, completion("<think>long", finish_reason="length"))) as server:
        reply = run(OpenAIClient("m", server.base_url, api_key).chat([{"role": "user", "content": "q"}],
                                                                       stop=["</answer>"]))
    assert reply.finish_reason == "length" and reply.text == "<think>long"


def test_openai_retries_429_then_succeeds(api_key, caplog):
    calls = []

    def handler(body):
        calls.append(time.perf_counter())
        if len(calls) == 1:
            return 429, ({"error": {"message": "rate limited", "type": "rate_limit"}}, {"Retry-After": "0.2"})
        return 200, completion("ok")

    with LoopbackOpenAI(handler) as server, caplog.at_level(logging.WARNING):
        reply = run(OpenAIClient("m", server.base_url, api_key, backoff_s=0.01).chat([{"role": "user", "content": "q"}]))
    assert reply.text == "ok" and len(calls) == 2
    assert calls[1] - calls[0] >= 0.2  # Retry-After was honoured
    assert "RateLimitError" in caplog.text and KEY not in caplog.text  # the key is never logged


def test_openai_retries_5xx_not_4xx(api_key):
    statuses = iter([503, 500, 200])
    with LoopbackOpenAI(lambda body: (s := next(statuses), completion("fine") if s == 200 else {"error": {}})) as server:
        reply = run(OpenAIClient("m", server.base_url, api_key, backoff_s=0.01).chat([{"role": "user", "content": "q"}]))
    assert reply.text == "fine" and len(server.requests) == 3

    import openai

    with LoopbackOpenAI(lambda body: (400, {"error": {"message": "bad request"}})) as server:
        with pytest.raises(openai.BadRequestError):
            run(OpenAIClient("m", server.base_url, api_key, backoff_s=0.01).chat([{"role": "user", "content": "q"}]))
    assert len(server.requests) == 1  # a 400 cannot be fixed by retrying


def test_openai_timeout_then_retry_and_give_up(api_key):
    calls = []

    async def slow_first(body):
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(2.0)
        return 200, completion("after timeout")

    with LoopbackOpenAI(slow_first) as server:
        t0 = time.perf_counter()
        reply = run(OpenAIClient("m", server.base_url, api_key, timeout_s=0.3, backoff_s=0.01)
                    .chat([{"role": "user", "content": "q"}]))
        assert reply.text == "after timeout" and time.perf_counter() - t0 < 1.5

    async def always_slow(body):
        await asyncio.sleep(2.0)
        return 200, completion("never")

    with LoopbackOpenAI(always_slow) as server:
        t0 = time.perf_counter()
        with pytest.raises(RuntimeError, match="giving up after 2 attempts .*APITimeoutError"):
            run(OpenAIClient("m", server.base_url, api_key, timeout_s=0.3, max_retries=1, backoff_s=0.01)
                .chat([{"role": "user", "content": "q"}]))
        assert time.perf_counter() - t0 < 1.5


def test_openai_concurrency_limit(api_key):
    async def handler(body):
        await asyncio.sleep(0.1)
        return 200, completion("x")

    async def many(client):
        return await asyncio.gather(*[client.chat([{"role": "user", "content": str(i)}]) for i in range(12)])

    with LoopbackOpenAI(handler) as server:
        replies = run(many(OpenAIClient("m", server.base_url, api_key, concurrency=3)))
    assert len(replies) == 12 and server.max_in_flight == 3


def test_openai_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("WDLIB_NO_SUCH_KEY", raising=False)
    with pytest.raises(RuntimeError, match="WDLIB_NO_SUCH_KEY"):
        OpenAIClient("m", "http://127.0.0.1:9/v1", "WDLIB_NO_SUCH_KEY")


def test_make_client_openai(api_key):
    spec = ModelSpec(name="judge-x", backend="openai", base_url="http://127.0.0.1:9/v1", api_key_env=api_key,
                     concurrency=5, timeout_s=7)
    client = make_client(spec)
    assert isinstance(client, OpenAIClient) and client.model_name == "judge-x" and client.timeout_s == 7


# ------------------------------------------------------------------ in-process transformers (tiny real model)
@pytest.fixture(scope="module")
def tiny():
    import torch

    torch.set_num_threads(1)  # with other jobs on the 2 cores, 2 threads spin-wait: 5-10x slower than 1
    return TransformersClient("embedded:smollm2-135m", max_new_tokens=16, device="cpu")


PROMPT = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "Name a colour."}]


@pytest.mark.slow
def test_transformers_batches_concurrent_requests(tiny):
    async def go():
        ticks = 0

        async def ticker():  # the event loop must keep running while the model generates
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        prompt = tiny.encode_prompt(PROMPT)
        replies = await asyncio.gather(*[tiny.generate(prompt + tiny.tokenizer.encode(" " * i), temperature=0,
                                                       max_new_tokens=4 + 2 * i, logprobs=True) for i in range(4)])
        task.cancel()
        return replies, ticks

    before = len(tiny._batcher.batch_sizes)
    replies, ticks = run(go())
    assert tiny._batcher.batch_sizes[before:] == [4]  # one batched generate for the four requests
    assert ticks > 5
    for i, r in enumerate(replies):
        assert 1 <= len(r.token_ids) <= 4 + 2 * i  # each request's own max_new_tokens is respected
        assert r.finish_reason == ("length" if len(r.token_ids) == 4 + 2 * i and r.token_ids[-1] != 2 else "stop")
        closed = r.token_ids[:-1] if r.token_ids[-1] == 2 else r.token_ids  # the closing <|im_end|> is not text
        assert r.text == tiny.tokenizer.decode(closed, skip_special_tokens=False)
        assert len(r.logprobs) == len(r.token_ids) and all(lp <= 0 for lp in r.logprobs)
        assert 0 not in r.token_ids  # never the batch's padding


@pytest.mark.slow
def test_transformers_stop_string_cuts_the_row(tiny):
    # Prefill the assistant turn so the model is likely to close the tag; check the cut, whatever it writes.
    prompt = tiny.encode_prompt(PROMPT) + tiny.tokenizer.encode("<think>easy</think>\n<answer>Blue",
                                                                add_special_tokens=False)

    answer = run(tiny.generate(prompt, temperature=0, stop=["</answer>"], max_new_tokens=12))
    free = run(tiny.generate(prompt, temperature=0, max_new_tokens=12))
    full = tiny.tokenizer.decode(prompt + answer.token_ids)
    assert answer.finish_reason == "stop"
    if answer.token_ids[-1] != 2:  # stopped on the string: cut right after it
        assert full.endswith("</answer>") and answer.token_ids == free.token_ids[: len(answer.token_ids)]


@pytest.mark.slow
def test_transformers_reuses_a_loaded_model(tiny):
    client = TransformersClient(model=tiny.model, tokenizer=tiny.tokenizer, max_new_tokens=3)
    reply = run(client.chat(PROMPT, temperature=0))
    assert client.model is tiny.model and 1 <= reply.completion_tokens <= 3
    assert reply.prompt_tokens == len(tiny.encode_prompt(PROMPT))
    with pytest.raises(ValueError, match="tokenizer"):
        TransformersClient(model=tiny.model)


@pytest.mark.slow
def test_make_client_transformers():
    spec = ModelSpec(name="embedded:smollm2-135m", backend="transformers", max_new_tokens=5)
    client = make_client(spec, device="cpu")
    assert isinstance(client, TransformersClient) and client.max_new_tokens == 5 and client.token_level


# ------------------------------------------------------------------ in-process vLLM (GPU): the engine's arguments
def test_vllm_engine_gets_automatic_prefix_caching(monkeypatch):
    """vllm is not installable without a GPU: a stand-in module records what VLLMClient passes to `vllm.LLM`."""
    import sys
    import types

    from wdlib.llm import VLLMClient, prefix_caching_enabled, vllm_engine_kwargs

    made = []

    class LLM:
        def __init__(self, **kwargs):
            made.append(kwargs)
            self.llm_engine = types.SimpleNamespace(vllm_config=types.SimpleNamespace(
                cache_config=types.SimpleNamespace(enable_prefix_caching=kwargs["enable_prefix_caching"])))

        def get_tokenizer(self):
            from wdlib import models

            return models.load_tokenizer("embedded:smollm2-135m")

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM))
    spec = ModelSpec(name="Qwen/Qwen2.5-7B-Instruct", backend="vllm", dtype="bfloat16", context_length=32768)
    client = VLLMClient.from_spec(spec)
    assert made[-1]["enable_prefix_caching"] is True and made[-1]["max_model_len"] == 32768
    assert prefix_caching_enabled(client.llm) is True
    spec.extra = {"engine_kwargs": {"enable_prefix_caching": False, "enforce_eager": True}}  # params may override
    VLLMClient.from_spec(spec)
    assert made[-1]["enable_prefix_caching"] is False and made[-1]["enforce_eager"] is True
    assert prefix_caching_enabled(types.SimpleNamespace()) is None  # an engine that does not say
    assert vllm_engine_kwargs("m", "auto", 0.9, 1, None)["enable_prefix_caching"] is True


def test_gpu_params_keep_prefix_caching_on():
    from wdlib import params

    for name in ("7b", "32b", "qwq32b"):
        policy = params.load(f"{name}.yaml").models.policy
        assert policy.backend == "vllm" and policy.extra["engine_kwargs"]["enable_prefix_caching"] is True, name

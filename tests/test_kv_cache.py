"""KV-cache reuse (`wdlib.kv_cache`, `TransformersClient(kv_cache_tokens=...)`) on the tiny model: the same tokens as
re-encoding everything, the cache's bookkeeping, and invalidation when the weights change."""

from __future__ import annotations

import asyncio
import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from wdlib.kv_cache import PrefixCache, ReservedLayer, common_prefix, grouped_attention
from wdlib.llm import TransformersClient

SYSTEM = ("You are a careful research assistant. You answer questions by searching the web and reading pages, and "
          "you check every fact against a second source before you answer. Keep answers short.")
QUESTIONS = ["What is the capital of France?", "Who wrote the play Hamlet, and when?", "Name a prime number."]


def kv(n: int, value: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.full((1, n, 2), value), torch.full((1, n, 2), value)) for _ in range(2)]


# ------------------------------------------------------------------ bookkeeping (no model)
def test_lookup_finds_the_longest_common_prefix():
    cache = PrefixCache(max_tokens=100)
    short = cache.add([1, 2, 3], kv(3))
    long = cache.add([1, 2, 3, 4, 5, 6], kv(6))
    other = cache.add([1, 2, 9, 9], kv(4))
    assert cache.lookup(np.array([1, 2, 3, 4, 5, 6, 7])) == (long, 6)
    assert cache.lookup(np.array([1, 2, 3, 4, 0])) == (long, 4)  # a partial match counts
    assert cache.lookup(np.array([1, 2, 9, 9, 9]))[0] == other
    assert cache.lookup(np.array([7, 7])) == (None, 0)
    assert short in cache.entries and common_prefix(np.array([1, 2]), np.array([1, 3])) == 1


def test_token_cap_evicts_least_recently_used_and_release_keeps_shared_prefixes():
    cache = PrefixCache(max_tokens=10)
    shared = cache.add([1, 2, 3], kv(3), shared=True)
    a = cache.add([1, 2, 3, 4], kv(4))
    cache.get(shared)  # used again: now the most recent
    b = cache.add([1, 2, 3, 5, 6], kv(5))  # 12 tokens > 10: the least recently used (a) goes
    assert a not in cache.entries and {shared, b} <= set(cache.entries) and cache.tokens == 8
    assert cache.stats["evicted"] == 1
    assert cache.add(list(range(11)), kv(11)) is None and cache.tokens == 8  # larger than the cap: not kept
    cache.release([1, 2, 3, 5, 6, 7, 8])  # the trajectory that continued b is over
    assert set(cache.entries) == {shared} and cache.tokens == 3 and cache.stats["released"] == 1
    assert cache.lookup(np.array([1, 2, 3, 9]))[0] == shared


def test_reserved_layer_writes_in_place_and_grows_past_its_room():
    layer = ReservedLayer()
    keys, values = torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2)
    keys[..., :2, :] = 1
    layer.reserve(keys, values, 2)
    k, _ = layer.update(torch.full((1, 1, 1, 2), 2.0), torch.full((1, 1, 1, 2), 2.0))
    assert k.shape[-2] == 3 and k.data_ptr() == keys.data_ptr()  # in place: no copy of the cache
    k, v = layer.update(torch.full((1, 1, 3, 2), 3.0), torch.full((1, 1, 3, 2), 3.0))  # 6 > 4: grows
    assert layer.get_seq_length() == 6 and k[0, 0, :, 0].tolist() == [1, 1, 2, 3, 3, 3] and v[0, 0, -1, 0] == 3


# ------------------------------------------------------------------ the tiny model
@pytest.fixture(scope="module")
def plain():
    torch.set_num_threads(1)  # with other jobs on the 2 cores, 2 threads spin-wait: 5-10x slower than 1
    return TransformersClient("embedded:smollm2-135m", max_new_tokens=8, device="cpu", dtype="float32")


def reusing(plain, tokens: int = 8192) -> TransformersClient:
    client = TransformersClient(model=plain.model, tokenizer=plain.tokenizer, max_new_tokens=8, kv_cache_tokens=tokens)
    client._stop_cache = plain._stop_cache
    return client


def observation(client, turn: int, question: str) -> list[int]:
    text = (f"<|im_end|>\n<|im_start|>user\n<tool_response>\nresult {turn} for {question} "
            + "and more " * (3 * turn + len(question) % 4) + "\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    return client.tokenizer(text, add_special_tokens=False)["input_ids"]


async def conversations(client, turns: int = 3, **sampling) -> list[list[list[int]]]:
    """Three conversations of different lengths at once, `turns` turns each; the generated ids of every turn."""

    async def one(question: str) -> list[list[int]]:
        ids = client.encode_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
        out = []
        for turn in range(turns):
            reply = await client.generate(ids, max_new_tokens=6 + 2 * turn, stop=["</answer>"], **sampling)
            out.append(reply.token_ids)
            ids = ids + reply.token_ids + observation(client, turn, question)
        client.release(ids)
        return out

    return list(await asyncio.gather(*(one(q) for q in QUESTIONS)))


@pytest.mark.slow
def test_greedy_tokens_identical_with_and_without_reuse(plain):
    client = reusing(plain)
    expected = asyncio.run(conversations(plain, temperature=0))
    got = asyncio.run(conversations(client, temperature=0))
    assert got == expected
    stats = client.prefix_cache.stats
    assert stats["shared_prefixes"] == 1  # the common system prompt, encoded once for the three
    assert stats["reused_tokens"] > stats["encoded_tokens"]  # most prompt tokens came from the cache
    assert client._batcher.batch_sizes == [3, 3, 3]  # batching across conversations stays
    # finished conversations were released: only the shared prefix is left
    assert len(client.prefix_cache) == 1 and next(iter(client.prefix_cache.entries.values())).shared
    assert client.model.config._attn_implementation == "sdpa"  # the grouped attention was only for generate


@pytest.mark.slow
def test_sampling_with_a_seed_gives_the_same_tokens_with_and_without_reuse(plain):
    client = reusing(plain)
    sampling = {"temperature": 1.0, "top_p": 0.95, "seed": 7}
    assert asyncio.run(conversations(client, turns=2, **sampling)) == \
        asyncio.run(conversations(plain, turns=2, **sampling))


@pytest.mark.slow
def test_a_small_cap_evicts_and_still_gives_the_same_tokens(plain):
    client = reusing(plain, tokens=150)  # less than the three conversations need
    assert asyncio.run(conversations(client, temperature=0)) == asyncio.run(conversations(plain, temperature=0))
    assert client.prefix_cache.stats["evicted"] > 0 and client.prefix_cache.tokens <= 150


@pytest.mark.slow
def test_an_optimizer_step_empties_the_cache(plain):
    import copy

    model = copy.deepcopy(plain.model)
    fresh = TransformersClient(model=model, tokenizer=plain.tokenizer, max_new_tokens=8)
    client = TransformersClient(model=model, tokenizer=plain.tokenizer, max_new_tokens=8, kv_cache_tokens=8192)
    client._stop_cache = fresh._stop_cache = plain._stop_cache
    asyncio.run(conversations(client, turns=1, temperature=0))
    assert len(client.prefix_cache) >= 1
    # one real optimizer step on the same model object (the DAPO trainer's situation)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ids = torch.tensor([client.encode_prompt([{"role": "user", "content": QUESTIONS[0]}])])
    model.train()
    with torch.enable_grad():
        model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    invalidations = client.prefix_cache.stats["invalidations"]
    after = asyncio.run(conversations(client, turns=2, temperature=0))
    assert client.prefix_cache.stats["invalidations"] == invalidations + 1  # no stale key/values were used
    assert after == asyncio.run(conversations(fresh, turns=2, temperature=0))


@pytest.mark.slow
def test_dapo_policy_client_is_kept_within_a_step_and_invalidated_after(plain):
    from wdlib.dapo import transformers_policy_client

    trainer = SimpleNamespace(processing_class=plain.tokenizer, state=SimpleNamespace(global_step=0))
    client = transformers_policy_client(trainer, plain.model, 8, 4096)
    client.prefix_cache.add([1, 2, 3], [(torch.zeros(3, 3, 64), torch.zeros(3, 3, 64))])
    assert transformers_policy_client(trainer, plain.model, 8, 4096) is client  # a refill of the same step
    assert len(client.prefix_cache) == 1
    trainer.state.global_step = 1  # the optimizer stepped: the weights are new
    assert transformers_policy_client(trainer, plain.model, 16, 4096) is client
    assert len(client.prefix_cache) == 0 and client.prefix_cache.stats["invalidations"] == 1
    assert client._batcher.max_batch_size == 16


@pytest.mark.slow
def test_grouped_attention_gives_the_same_logits_and_restores_the_setting(plain):
    model = plain.model
    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [0, 0, 7, 8, 9, 10]])
    mask = (ids != 0).long()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        with grouped_attention(model):
            assert model.config._attn_implementation != "sdpa"
            got = model(input_ids=ids, attention_mask=mask).logits
    assert model.config._attn_implementation == "sdpa"
    assert torch.equal(got[1, 2:], expected[1, 2:]) and torch.equal(got[0], expected[0])


@pytest.mark.slow
def test_the_agent_releases_a_finished_trajectory(plain):
    from wdlib.agent import run_agent

    class Tools:
        async def call(self, name, arguments):
            return "nothing found\n"

    client = reusing(plain)
    trajectory = asyncio.run(run_agent("What is 2 + 2?", client, Tools(), max_turns=2,
                                       sampling={"temperature": 0, "max_new_tokens": 8}))
    assert trajectory.turns == 2  # 8 tokens never finish a turn: the second turn continues the first one's cache
    assert client.prefix_cache.stats["reused_tokens"] > len(trajectory.tokens["prompt_ids"])
    assert len(client.prefix_cache) == 0 and client.prefix_cache.stats["released"] == 1


@pytest.mark.slow
def test_the_agent_releases_a_failed_trajectory_too(plain):
    from wdlib.agent import run_agent

    class Tools:
        async def call(self, name, arguments):
            return "nothing found\n"

    client = reusing(plain)
    generate, calls = client.generate, []

    async def fails_on_the_second_turn(ids, **kwargs):  # a reply the agent cannot read, after the cache was used
        calls.append(len(ids))
        reply = await generate(ids, **kwargs)
        if len(calls) == 2:
            reply = copy.copy(reply)
            reply.prompt_tokens = "backend lost"  # raises where the agent adds it up, outside any except
        return reply

    client.generate = fails_on_the_second_turn
    trajectory = asyncio.run(run_agent("What is 2 + 2?", client, Tools(), max_turns=2,
                                       sampling={"temperature": 0, "max_new_tokens": 8}))
    assert trajectory.finish_reason == "error" and "TypeError" in trajectory.error
    assert client.prefix_cache.stats["released"] == 1 and len(client.prefix_cache) == 0

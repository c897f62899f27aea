"""Chat clients behind one async interface: `await client.chat(messages, **sampling) -> Reply`.

- `OpenAIClient`: any OpenAI-compatible endpoint (vLLM serve, OpenAI, llama.cpp server...), with retries, a timeout
  and a concurrency limit.
- `TransformersClient`: an in-process transformers model (CPU or GPU).
- `VLLMClient`: an in-process vLLM engine (GPU only; vllm is imported lazily).

The in-process clients are token-level: they expose `.tokenizer` and `await generate(prompt_ids, **sampling)`, which
returns the generated `token_ids` (RL needs the exact ids). Concurrent requests are gathered by a small batching queue
into one batched backend call, run in a worker thread so the event loop (tools, other rollouts) keeps going.

Sampling keywords, the same for every client: temperature, top_p, top_k, max_new_tokens (alias max_tokens), stop
(strings; the reply's text ends with the stop string that ended it), seed, logprobs (bool, in-process only).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from wdlib.aio import Batcher

from wdlib.redact import register_env

log = logging.getLogger(__name__)


@dataclass
class Reply:
    text: str
    reasoning_content: str | None = None  # a reasoning model's thinking, when the backend returns it separately
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # stop (eos or a stop string) | length
    token_ids: list[int] | None = None  # in-process clients: generated ids, up to and including the stopping token
    logprobs: list[float] | None = None  # per generated token, when asked for


def _split_sampling(sampling: dict[str, Any], default_max_new_tokens: int) -> dict[str, Any]:
    """Normalise sampling keywords across clients (max_tokens is an alias of max_new_tokens)."""
    s = dict(sampling)
    if "max_tokens" in s:
        s.setdefault("max_new_tokens", s.pop("max_tokens"))
    s.setdefault("max_new_tokens", default_max_new_tokens)
    s["stop"] = tuple(s.get("stop") or ())
    return s


def _close_stop(text: str, stop: Sequence[str], matched: str | None = None) -> str:
    """Endpoints drop the stop string from the text; put back the one that ended it, so every client's text
    reads the same (`...</tool_call>`). Without the server telling which one matched, a stop string whose opening
    tag is left unclosed is the one."""
    if matched in stop:
        return text + matched
    for s in stop:
        opening = s.replace("</", "<", 1)
        if s.startswith("</") and text.count(opening) > text.count(s):
            return text + s
    return text


# ------------------------------------------------------------------ OpenAI-compatible endpoint
class OpenAIClient:
    """An OpenAI-compatible chat-completions endpoint. The key comes from the env var named `api_key_env`.

    `extra` (ModelSpec.extra): `extra_body` (dict sent with every request, e.g. vLLM's chat_template_kwargs),
    `max_tokens_param` ("max_tokens" or "max_completion_tokens").
    """

    token_level = False
    _openai_params = {"temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"}

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str | None = None, *,
                 concurrency: int = 8, timeout_s: float = 120.0, max_retries: int = 5, backoff_s: float = 1.0,
                 max_new_tokens: int = 512, extra: dict | None = None):
        from openai import AsyncOpenAI

        if api_key_env:
            register_env(api_key_env)  # its value is a key whatever the variable is called: never in a record or log
            key = os.environ.get(api_key_env)
            if not key:
                raise RuntimeError(f"environment variable {api_key_env} (the API key for {model!r}) is not set")
        else:
            key = "EMPTY"  # local servers (vLLM serve, llama.cpp) accept any key
        self.model_name = model
        self.max_new_tokens = max_new_tokens
        self.max_retries, self.backoff_s, self.timeout_s = max_retries, backoff_s, timeout_s
        self.extra = dict(extra or {})
        self._concurrency = concurrency
        # Our own retry loop (below) so backoff and what is retried are explicit; the SDK's is switched off.
        self._new_client = lambda: AsyncOpenAI(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0)
        # The SDK's connections and our semaphore belong to one event loop, and sync callers (run_sync, one
        # asyncio.run per notebook cell) make a new loop each time: keep one of each for the running loop.
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_spec(cls, spec) -> "OpenAIClient":
        return cls(spec.name, spec.base_url, spec.api_key_env, concurrency=spec.concurrency, timeout_s=spec.timeout_s,
                   max_new_tokens=spec.max_new_tokens, extra=spec.extra)

    async def _for_this_loop(self):
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._client, self._semaphore = loop, self._new_client(), asyncio.Semaphore(self._concurrency)
            # Close the connections when this loop shuts down: asyncio.run finalizes live async generators
            # (shutdown_asyncgens) while the loop still runs, so the `finally` below can await the close.
            self._closer = _close_at_loop_shutdown(self._client)
            await self._closer.__anext__()
        return self._client, self._semaphore

    async def chat(self, messages: list[dict], **sampling) -> Reply:
        import openai
        from openai.types.chat import ChatCompletion

        s = _split_sampling(sampling, self.max_new_tokens)
        s.pop("logprobs", None)
        stop = s.pop("stop")
        # OpenAI's reasoning models want max_completion_tokens; vLLM and most servers take max_tokens
        length_key = self.extra.get("max_tokens_param", "max_tokens")
        request = {"model": self.model_name, "messages": messages, length_key: s.pop("max_new_tokens")}
        if stop:
            request["stop"] = list(stop)
        extra_body = {**self.extra.get("extra_body", {})}
        for k, v in s.items():
            if k in self._openai_params:
                request[k] = v
            else:  # top_k, repetition_penalty, min_p...: vLLM and llama.cpp read them from the body
                extra_body[k] = v
        request.update(extra_body)

        client, semaphore = await self._for_this_loop()
        async with semaphore:
            for attempt in range(self.max_retries + 1):
                try:
                    # POST the body as it is: the SDK's typed create() first walks every message through its
                    # TypedDict transform (a no-op for plain chat messages, yet most of the client's CPU time per
                    # request at high concurrency). Errors, timeouts and response parsing are the SDK's as usual.
                    response = await client.post("/chat/completions", body=request, cast_to=ChatCompletion)
                    break
                # 429, every 5xx (the SDK's InternalServerError), timeouts and refused connections are retried;
                # other 4xx (bad request, auth) are not: retrying cannot fix them.
                except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as e:
                    status = getattr(e, "status_code", None)
                    if attempt == self.max_retries:
                        raise RuntimeError(f"{self.model_name}: giving up after {attempt + 1} attempts "
                                           f"({type(e).__name__}{f' {status}' if status else ''})") from e
                    delay = self._retry_delay(e, attempt)
                    log.warning("%s: %s%s, retry %d/%d in %.1fs", self.model_name, type(e).__name__,
                                f" {status}" if status else "", attempt + 1, self.max_retries, delay)
                    await asyncio.sleep(delay)

        choice = response.choices[0]
        message = choice.message
        # vLLM and DeepSeek-style servers return the thinking as an extra field (older vLLM: reasoning_content)
        extra = getattr(message, "model_extra", None) or {}
        reasoning = (getattr(message, "reasoning_content", None) or extra.get("reasoning_content")
                     or extra.get("reasoning"))
        text = message.content or ""
        if choice.finish_reason == "stop" and stop:
            # vLLM says which stop string matched
            matched = getattr(choice, "stop_reason", None) or (choice.model_extra or {}).get("stop_reason")
            text = _close_stop(text, stop, matched if isinstance(matched, str) else None)
        usage = response.usage
        return Reply(text=text, reasoning_content=reasoning,
                     prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                     completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                     finish_reason="length" if choice.finish_reason == "length" else "stop")

    def _retry_delay(self, error: Exception, attempt: int) -> float:
        response = getattr(error, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        try:
            if retry_after is not None:
                return min(float(retry_after), 60.0)
        except ValueError:
            pass
        return min(self.backoff_s * 2 ** attempt, 30.0) * (0.5 + random.random())


async def _close_at_loop_shutdown(client):
    try:
        yield
    finally:
        await client.close()


class _TokenClient:
    """Shared by the in-process clients: chat = chat template + generate."""

    tokenizer: Any
    eos_ids: set[int]
    _batcher: Batcher
    max_new_tokens: int
    token_level = True

    def encode_prompt(self, messages: list[dict]) -> list[int]:
        # Remembered for plain role/content messages: a rollout renders each prompt num_generations times.
        plain = all(m.keys() <= {"role", "content"} for m in messages)
        key = tuple((m.get("role"), m.get("content")) for m in messages) if plain else None
        cache = self.__dict__.setdefault("_prompt_ids", {})
        if (ids := cache.get(key)) is None:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            if key is not None:
                cache[key] = ids
                while len(cache) > 256:
                    cache.pop(next(iter(cache)))
        return list(ids)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of generated ids: exactly what the ids say (special tokens included, so the messages stay in
        sync with the token transcript), except the end-of-turn token that closed the reply."""
        ids = list(ids)
        if ids and ids[-1] in self.eos_ids:
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    async def generate(self, prompt_ids: list[int], **sampling) -> Reply:
        return await self._batcher.submit(list(prompt_ids), _split_sampling(sampling, self.max_new_tokens))

    async def chat(self, messages: list[dict], **sampling) -> Reply:
        return await self.generate(self.encode_prompt(messages), **sampling)

    def release(self, ids: Sequence[int]) -> None:
        """The conversation `ids` is over: its cached key/values may go (a no-op where the engine manages them)."""


# ------------------------------------------------------------------ in-process transformers
class _RowStops:
    """Stopping criterion that stops each row at eos or a stop string and remembers where, so the batch's padding
    after a finished row is never mistaken for generated text."""

    def __init__(self, strings, eos_ids: set[int], prompt_len: int, batch: int):
        self.strings = strings  # a transformers StopStringCriteria, or None
        self.eos_ids = eos_ids
        self.prompt_len = prompt_len
        self.stopped_at = [None] * batch  # number of generated tokens, including the stopping one

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.eos_ids:
            done |= torch.isin(input_ids[:, -1], torch.tensor(sorted(self.eos_ids), device=input_ids.device))
        if self.strings is not None:
            done |= self.strings(input_ids, scores).to(input_ids.device)
        n = input_ids.shape[1] - self.prompt_len
        for i in torch.nonzero(done).flatten().tolist():
            if self.stopped_at[i] is None:
                self.stopped_at[i] = n
        return done


class TransformersClient(_TokenClient):
    """An in-process transformers causal LM. Pass `name` to load one, or `model=` and `tokenizer=` to reuse a
    model that is already loaded (the DAPO trainer passes its policy).

    `kv_cache_tokens` > 0 keeps up to that many tokens of key/values between calls (`wdlib.kv_cache`): a prompt that
    continues a cached sequence (the next turn of a conversation, the shared prompt template) encodes only its new
    tokens. The cache follows the weights: it empties itself when they change, and `invalidate()` empties it."""

    def __init__(self, name: str | None = None, *, model=None, tokenizer=None, device: str = "auto",
                 dtype: str = "auto", max_new_tokens: int = 512, max_batch_size: int = 32, batch_wait_s: float = 0.005,
                 kv_cache_tokens: int = 0):
        from wdlib import models

        if model is None:
            if name is None:
                raise ValueError("TransformersClient needs a model name or model= and tokenizer=")
            model = models.load_model(name, dtype=dtype, device=device)
        if tokenizer is None:
            if name is None:
                raise ValueError("TransformersClient(model=...) also needs tokenizer=")
            tokenizer = models.load_tokenizer(name)
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; batched generation needs one")
        self.model, self.tokenizer = model, tokenizer
        self.model_name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()  # one generate at a time on this model, whatever the caller's loop
        self._stop_cache: dict[tuple[str, ...], Any] = {}
        self.prefix_cache = None
        if kv_cache_tokens:
            from wdlib import kv_cache

            if kv_cache.supported(model):
                self.prefix_cache = kv_cache.PrefixCache(kv_cache_tokens)
            else:
                log.warning("%s: no KV-cache reuse (sliding-window or linear-attention layers)", self.model_name)
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_ids = set(eos) if isinstance(eos, (list, tuple)) else {eos}
        # One transformers call takes one set of sampling settings; max_new_tokens may differ (rows are cut after).
        self._batcher = Batcher(self._run_batch, max_batch_size, batch_wait_s,
                                 group_key=lambda s: repr(sorted(kv for kv in s.items() if kv[0] != "max_new_tokens")))

    @classmethod
    def from_spec(cls, spec, device: str = "auto", **kwargs) -> "TransformersClient":
        kwargs.setdefault("kv_cache_tokens", spec.kv_cache_tokens)
        return cls(spec.name, device=device, dtype=spec.dtype, max_new_tokens=spec.max_new_tokens,
                   max_batch_size=max(spec.concurrency, 1), **kwargs)

    def release(self, ids: Sequence[int]) -> None:
        if self.prefix_cache is not None:
            self.prefix_cache.release(ids)

    def invalidate(self) -> None:
        """Forget every cached key/value (the weights changed)."""
        if self.prefix_cache is not None:
            self.prefix_cache.clear()

    def _stop_criteria(self, stop: tuple[str, ...]):
        """transformers' stop-string matcher, built once per set of strings (building it scans the whole
        vocabulary: seconds on a CPU, far more than a short turn's generation)."""
        from transformers import StopStringCriteria

        if stop and stop not in self._stop_cache:
            self._stop_cache[stop] = StopStringCriteria(self.tokenizer, list(stop))
        return self._stop_cache.get(stop)

    def _run_batch(self, prompts: list[list[int]], samplings: list[dict]) -> list[Reply]:
        import torch

        from wdlib import kv_cache

        s = samplings[0]
        max_new = max(x["max_new_tokens"] for x in samplings)
        pad = self.tokenizer.pad_token_id
        temperature = s.get("temperature", 1.0)
        do_sample = temperature is not None and temperature > 0
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new, do_sample=do_sample, pad_token_id=pad,
                                      eos_token_id=sorted(self.eos_ids), return_dict_in_generate=True,
                                      output_logits=bool(s.get("logprobs")))
        if do_sample:
            kwargs.update(temperature=temperature, top_p=s.get("top_p", 1.0), top_k=s.get("top_k", 0))
        reuse = self.prefix_cache is not None
        with self._lock, torch.no_grad(), kv_cache.grouped_attention(self.model, enabled=reuse):
            was_training = self.model.training
            self.model.eval()
            try:
                # Left-padded rows; with reuse, each row starts from its longest cached prefix.
                batch = kv_cache.prepare(self.prefix_cache, self.model, prompts, pad, max_new)
                width = batch.width
                stops = _RowStops(self._stop_criteria(s["stop"]), self.eos_ids, width, len(prompts))
                if s.get("seed") is not None:
                    torch.manual_seed(s["seed"])
                out = self.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                          past_key_values=batch.past_key_values, stopping_criteria=[stops], **kwargs)
                replies = self._replies(prompts, samplings, out, width, stops, temperature if do_sample else 1.0)
                if reuse:
                    kv_cache.keep(self.prefix_cache, batch, prompts, out.past_key_values,
                                  [r.token_ids for r in replies])
            finally:
                self.model.train(was_training)
        return replies

    def _replies(self, prompts, samplings, out, width: int, stops: _RowStops, temperature: float) -> list[Reply]:
        import torch

        generated = out.sequences[:, width:].tolist()
        logprobs = None
        if samplings[0].get("logprobs"):
            steps = torch.stack(out.logits, dim=1).float()  # (batch, steps, vocab), raw logits
            steps = torch.log_softmax(steps / temperature, dim=-1)
            chosen = out.sequences[:, width:width + steps.shape[1]].unsqueeze(-1)
            logprobs = steps.gather(-1, chosen).squeeze(-1).tolist()
        replies = []
        for i, (prompt, row, sampling) in enumerate(zip(prompts, generated, samplings)):
            n = stops.stopped_at[i]
            finish = "stop" if n is not None and n <= sampling["max_new_tokens"] else "length"
            n = n if finish == "stop" else min(len(row), sampling["max_new_tokens"])
            ids = row[:n]
            replies.append(Reply(text=self.decode(ids), prompt_tokens=len(prompt), completion_tokens=len(ids),
                                 finish_reason=finish, token_ids=ids,
                                 logprobs=logprobs[i][:n] if logprobs is not None else None))
        return replies


# ------------------------------------------------------------------ in-process vLLM (GPU)
class VLLMClient(_TokenClient):
    """An in-process `vllm.LLM` (offline engine). Pass `name` to start one, or `llm=` to reuse one (TRL's colocated
    engine: `trainer.vllm_generation.llm`). vllm is imported only here, so CPU machines never import it.

    vLLM schedules a list of prompts with per-prompt SamplingParams itself, so one batch serves all requests."""

    def __init__(self, name: str | None = None, *, llm=None, tokenizer=None, dtype: str = "auto",
                 max_new_tokens: int = 512, max_batch_size: int = 256, gpu_memory_utilization: float = 0.85,
                 tensor_parallel_size: int = 1, max_model_len: int | None = None, batch_wait_s: float = 0.005,
                 engine_kwargs: dict | None = None):
        try:
            import vllm
        except ImportError as e:
            raise RuntimeError("backend 'vllm' needs the gpu extra (pip install -e '.[gpu]') and a CUDA GPU") from e
        from wdlib import models

        if llm is None:
            if name is None:
                raise ValueError("VLLMClient needs a model name or llm=")
            llm = vllm.LLM(**vllm_engine_kwargs(models.resolve(name), dtype, gpu_memory_utilization,
                                                tensor_parallel_size, max_model_len, engine_kwargs))
        self.llm = llm
        self.tokenizer = tokenizer if tokenizer is not None else llm.get_tokenizer()
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.eos_ids = {self.tokenizer.eos_token_id} | ({end} if isinstance(end, int) and end >= 0 else set())
        self.model_name = name or "vllm"
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()
        self._batcher = Batcher(self._run_batch, max_batch_size, batch_wait_s)

    @classmethod
    def from_spec(cls, spec, **kwargs) -> "VLLMClient":
        return cls(spec.name, dtype=spec.dtype, max_new_tokens=spec.max_new_tokens,
                   gpu_memory_utilization=spec.gpu_memory_utilization, tensor_parallel_size=spec.tensor_parallel_size,
                   max_model_len=spec.context_length, engine_kwargs=spec.extra.get("engine_kwargs"), **kwargs)

    def _run_batch(self, prompts: list[list[int]], samplings: list[dict]) -> list[Reply]:
        from vllm import SamplingParams

        params = []
        for s in samplings:
            params.append(SamplingParams(
                temperature=s.get("temperature", 1.0), top_p=s.get("top_p", 1.0), top_k=s.get("top_k", 0) or -1,
                max_tokens=s["max_new_tokens"], stop=list(s["stop"]) or None, include_stop_str_in_output=True,
                seed=s.get("seed"), logprobs=0 if s.get("logprobs") else None, skip_special_tokens=False,
                repetition_penalty=s.get("repetition_penalty", 1.0)))
        with self._lock:
            outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], sampling_params=params,
                                        use_tqdm=False)
        replies = []
        for prompt, output in zip(prompts, outputs):
            o = output.outputs[0]
            logprobs = None
            if o.logprobs is not None:
                logprobs = [lp[t].logprob for lp, t in zip(o.logprobs, o.token_ids)]
            replies.append(Reply(text=self.decode(o.token_ids), prompt_tokens=len(prompt),
                                 completion_tokens=len(o.token_ids),
                                 finish_reason="length" if o.finish_reason == "length" else "stop",
                                 token_ids=list(o.token_ids), logprobs=logprobs))
        return replies


def vllm_engine_kwargs(model: str, dtype: str, gpu_memory_utilization: float, tensor_parallel_size: int,
                       max_model_len: int | None, engine_kwargs: dict | None = None) -> dict:
    """`vllm.LLM` arguments, with automatic prefix caching on (an agent re-sends the whole conversation at every turn,
    and every trajectory starts with the same prompt: APC serves those tokens from the KV cache). vLLM V1 turns it on
    by default; it is set explicitly so an engine default cannot turn it off. `engine_kwargs` override."""
    return {"model": model, "dtype": dtype, "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size, "max_model_len": max_model_len,
            "enable_prefix_caching": True, **(engine_kwargs or {})}


def prefix_caching_enabled(llm) -> bool | None:
    """Whether a `vllm.LLM` runs with automatic prefix caching (None when the engine does not say)."""
    engine = getattr(llm, "llm_engine", None)
    config = getattr(engine, "vllm_config", None) or getattr(llm, "vllm_config", None)
    value = getattr(getattr(config, "cache_config", None), "enable_prefix_caching", None)
    return None if value is None else bool(value)


# ------------------------------------------------------------------ factory
def make_client(spec, device: str = "auto"):
    """The client for a ModelSpec (`backend`: openai | transformers | vllm)."""
    if spec.backend == "openai":
        return OpenAIClient.from_spec(spec)
    if spec.backend == "transformers":
        return TransformersClient.from_spec(spec, device=device)
    if spec.backend == "vllm":
        return VLLMClient.from_spec(spec)
    raise ValueError(f"unknown backend {spec.backend!r}")

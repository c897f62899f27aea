"""KV-cache reuse for the in-process transformers client (`wdlib.llm.TransformersClient`).

An agent's conversation grows turn by turn and every trajectory opens with the same ~700-token system + user prompt,
yet a plain `generate` call re-encodes the whole conversation each turn; on a CPU that prefill is most of the time.
`PrefixCache` keeps the key/values of what the client has already encoded, and each row of a new batch starts from the
longest cached prefix of its prompt, so a turn encodes only the observation and the tokens after it:

- every trajectory's cache stays between turns (the entry of turn k is replaced by the longer one of turn k+1);
- a prompt prefix shared by the rows of a batch (system prompt + user template up to the question) is encoded once, as
  a `shared` entry every later trajectory starts from;
- memory is bounded: `release(ids)` drops a finished trajectory's entry, and the least recently used entries go when
  the cache holds more than `max_tokens` tokens;
- caches belong to one version of the weights: `check_weights(model)` empties the cache when any parameter was
  modified in place since (an optimizer step, `load_state_dict`), and `clear()` does it explicitly.

What transformers 5.17 already does, used as is: `DynamicCache` holds per-layer key/values; `generate` continues from a
`past_key_values` shorter than `input_ids` (it encodes only the uncached tail) and takes position ids from the attention
mask, so padding *inside* a row is harmless. What it lacks, written here: the store looked up by longest common token
prefix (vLLM's automatic prefix caching does this on GPU), stacking rows whose cached lengths differ into one batched
cache, and cutting each row's cache back out after `generate`. (transformers' continuous batching, `generate_batch`,
shares prefix blocks too, but its CPU attention, `paged|sdpa`, attends over the whole packed batch through one mask:
quadratic in the batch's total tokens, slower than padded `generate` at rollout batch sizes.)

Row layout of a batch: `[pad][cached prefix][pad][new tokens]`. The cached parts are aligned on their right edge so one
past length fits all rows; the new parts are left-padded as usual.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from transformers.cache_utils import DynamicLayer

MIN_SHARED_TOKENS = 32  # a common prefix shorter than this is not worth a forward of its own


@dataclass
class Entry:
    ids: np.ndarray  # the token ids whose key/values are stored
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [kv_heads, len(ids), head_dim]
    shared: bool = False  # a prompt prefix many trajectories start from: kept when one of them is released


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def supported(model) -> bool:
    """Whether every layer keeps a full cache (no sliding window, no linear attention): what the store slices."""
    from transformers import DynamicCache

    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


def weights_version(model) -> int:
    """Grows whenever a parameter is modified in place (torch bumps a tensor's version counter on every in-place op:
    optimizer steps, `copy_`, `load_state_dict`)."""
    return sum(p._version for p in model.parameters())


class PrefixCache:
    """Cached key/values of token sequences, found by longest common prefix; LRU under a token cap."""

    def __init__(self, max_tokens: int):
        if max_tokens <= 0:
            raise ValueError("PrefixCache needs max_tokens > 0 (0 means no cache: do not build one)")
        self.max_tokens = max_tokens
        self.entries: OrderedDict[int, Entry] = OrderedDict()  # oldest use first
        self.tokens = 0
        self.stats = {"reused_tokens": 0, "encoded_tokens": 0, "shared_prefixes": 0, "evicted": 0, "released": 0,
                      "invalidations": 0}
        self._version: int | None = None
        self._keys = itertools.count()
        self._lock = threading.RLock()  # release() comes from the event loop, the rest from the generate thread

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, ids: np.ndarray) -> tuple[int | None, int]:
        """(key of the entry sharing the longest prefix with `ids`, that length); (None, 0) when none does."""
        best, best_len = None, 0
        with self._lock:
            for key, entry in self.entries.items():
                n = common_prefix(entry.ids, ids)
                if n > best_len:
                    best, best_len = key, n
        return best, best_len

    def add(self, ids: Sequence[int], layers: list[tuple[torch.Tensor, torch.Tensor]], shared: bool = False) -> int | None:
        if not len(ids) or len(ids) > self.max_tokens:
            return None
        with self._lock:
            key = next(self._keys)
            self.entries[key] = Entry(np.asarray(ids, dtype=np.int64), layers, shared)
            self.tokens += len(ids)
            while self.tokens > self.max_tokens and len(self.entries) > 1:  # least recently used first
                self.drop(next(iter(self.entries)))
                self.stats["evicted"] += 1
        return key

    def get(self, key: int) -> Entry:
        with self._lock:
            self.entries.move_to_end(key)
            return self.entries[key]

    def drop(self, key: int) -> None:
        with self._lock:
            entry = self.entries.pop(key, None)
            if entry is not None:
                self.tokens -= len(entry.ids)

    def release(self, ids: Sequence[int]) -> None:
        """A trajectory whose conversation is `ids` is finished: drop its entries (not the shared prefixes), also one
        that runs past `ids` (a reply generated but never recorded, when the episode failed right after it)."""
        ids = np.asarray(ids, dtype=np.int64)
        with self._lock:
            done = [k for k, e in self.entries.items()
                    if not e.shared and common_prefix(e.ids, ids) in (len(e.ids), len(ids))]
            for key in done:
                self.drop(key)
            self.stats["released"] += len(done)

    def clear(self) -> None:
        with self._lock:
            if self.entries:
                self.stats["invalidations"] += 1
            self.entries.clear()
            self.tokens = 0

    def check_weights(self, model) -> None:
        """Empty the cache if the weights changed since the entries were computed."""
        version = weights_version(model)
        with self._lock:
            if version != self._version:
                self.clear()
                self._version = version


# ------------------------------------------------------------------ attention
GROUPED_SDPA = "wdlib_grouped_sdpa"


def grouped_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs):
    """transformers' sdpa attention, except that grouped-query key/value heads stay grouped when there is a mask.

    transformers expands them (`repeat_kv`) whenever a mask is given, for the sake of CUDA kernels; torch's CPU sdpa
    takes `enable_gqa` with a mask and gives the same numbers. A batch of cached rows always has a padding mask, and
    the expansion (3 copies of every layer's cache per step for SmolLM2) was most of a CPU decode step: measured
    ~95 ms vs ~19 ms per layer for 16 rows of 1,500 tokens."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
        is_causal=bool(query.shape[2] > 1 and attention_mask is None and causal),
        enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GROUPED_SDPA, grouped_sdpa)
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)


@contextmanager
def grouped_attention(model, enabled: bool = True):
    """Generate with `grouped_sdpa` when the model uses sdpa; the model's own setting comes back after."""
    before = model.config._attn_implementation
    if before != "sdpa" or not enabled:
        yield
        return
    _register()
    model.set_attn_implementation(GROUPED_SDPA)
    try:
        yield
    finally:
        model.set_attn_implementation(before)


# ------------------------------------------------------------------ batches
@dataclass
class Batch:
    input_ids: torch.Tensor  # [rows, width]: [pad][cached][pad][new]
    attention_mask: torch.Tensor
    past_key_values: Any  # a DynamicCache holding the cached parts, or None when nothing is cached
    cached: list[int]  # per row: tokens taken from the cache
    used: list[int | None]  # per row: the entry they came from
    width: int


class ReservedLayer(DynamicLayer):
    """transformers' DynamicLayer with room reserved for the tokens to come, so `update` writes in place.
    (DynamicLayer concatenates, which copies the whole cache at every decode step: with 32 rows of ~1,500 tokens,
    2 GB per step for SmolLM2.) Outgrowing the room costs one copy into a larger buffer."""

    def reserve(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self._keys, self._values, self._length = keys, values, length
        self.keys, self.values = keys[..., :length, :], values[..., :length, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self._length + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            shape = (*self._keys.shape[:-2], end + 64, self._keys.shape[-1])
            keys, values = self._keys.new_zeros(shape), self._values.new_zeros(shape)
            keys[..., :self._length, :], values[..., :self._length, :] = self.keys, self.values
            self._keys, self._values = keys, values
        self._keys[..., self._length:end, :] = key_states
        self._values[..., self._length:end, :] = value_states
        self.reserve(self._keys, self._values, end)
        return self.keys, self.values


def _past(model, layers_per_row: list[list[tuple[torch.Tensor, torch.Tensor]] | None], lengths: list[int],
          room: int):
    """A batched DynamicCache of the rows' cached prefixes, right-aligned on the longest (zeros where padded), with
    `room` more tokens reserved per layer."""
    from transformers import DynamicCache

    longest = max(lengths)
    template = next(layers for layers in layers_per_row if layers)
    cache = DynamicCache(config=model.config)
    for layer, (k0, v0) in enumerate(template):
        keys = k0.new_zeros(len(lengths), k0.shape[0], longest + room, k0.shape[2])
        values = v0.new_zeros(len(lengths), v0.shape[0], longest + room, v0.shape[2])
        for row, (layers, m) in enumerate(zip(layers_per_row, lengths)):
            if m:
                keys[row, :, longest - m:longest] = layers[layer][0][:, :m]
                values[row, :, longest - m:longest] = layers[layer][1][:, :m]
        cache.layers[layer] = ReservedLayer()
        cache.layers[layer].reserve(keys, values, longest)
    return cache


def _encode(model, ids: list[int], start: Entry | None, start_len: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Key/values of `ids` (one row), continuing from the first `start_len` tokens of `start` when given."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    past = None
    if start_len:
        past = DynamicCache([(k[None, :, :start_len], v[None, :, :start_len]) for k, v in start.layers],
                            config=model.config)
    out = model(input_ids=torch.tensor([ids[start_len:]], device=device), past_key_values=past, use_cache=True,
                position_ids=torch.arange(start_len, len(ids), device=device)[None])
    return [(layer.keys[0], layer.values[0]) for layer in out.past_key_values.layers]


def prepare(cache: PrefixCache | None, model, prompts: list[list[int]], pad_id: int, max_new_tokens: int) -> Batch:
    """The batch's inputs and the cache to start `generate` from (run under no_grad, with the model in eval mode).
    Without a cache: the prompts left-padded, as plain batched generation does."""
    device = next(model.parameters()).device
    if cache is None:
        width = max(len(p) for p in prompts)
        return Batch(input_ids=torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device),
                     attention_mask=torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                                                 device=device),
                     past_key_values=None, cached=[0] * len(prompts), used=[None] * len(prompts), width=width)
    cache.check_weights(model)
    arrays = [np.asarray(p, dtype=np.int64) for p in prompts]
    used, cached, entries = [], [], []
    for ids in arrays:
        key, m = cache.lookup(ids)
        used.append(key)
        cached.append(min(m, len(ids) - 1))  # at least one token to encode: generate needs the last one's logits
        entries.append(cache.get(key) if key is not None else None)  # held: an eviction below cannot take it
    # One forward for a prefix the rows share beyond what they have cached (the first batch's prompt template).
    if len(arrays) > 1:
        shared = min(min(common_prefix(arrays[0], a) for a in arrays[1:]), min(len(a) for a in arrays) - 1)
        if shared >= MIN_SHARED_TOKENS and min(cached) < shared:
            start = max(range(len(arrays)), key=lambda i: cached[i])  # continue from the longest cached part
            start_len = min(cached[start], shared)
            layers = _encode(model, prompts[0][:shared], entries[start], start_len)
            key = cache.add(arrays[0][:shared], layers, shared=True)
            cache.stats["shared_prefixes"] += 1
            cache.stats["encoded_tokens"] += shared - start_len
            for i in range(len(arrays)):
                if cached[i] < shared:
                    used[i], cached[i], entries[i] = key, shared, Entry(arrays[0][:shared], layers, True)
    layers = [e.layers if e is not None and m else None for e, m in zip(entries, cached)]
    used = [key if m else None for key, m in zip(used, cached)]
    longest = max(cached)
    new = max(len(p) - m for p, m in zip(prompts, cached))
    ids_rows, mask_rows = [], []
    for p, m in zip(prompts, cached):
        n = len(p) - m
        ids_rows.append([pad_id] * (longest - m) + p[:m] + [pad_id] * (new - n) + p[m:])
        mask_rows.append([0] * (longest - m) + [1] * m + [0] * (new - n) + [1] * n)
    cache.stats["reused_tokens"] += sum(cached)
    cache.stats["encoded_tokens"] += sum(len(p) - m for p, m in zip(prompts, cached))
    return Batch(input_ids=torch.tensor(ids_rows, device=device),
                 attention_mask=torch.tensor(mask_rows, device=device),
                 past_key_values=_past(model, layers, cached, new + max_new_tokens) if longest else None,
                 cached=cached, used=used, width=longest + new)


def keep(cache: PrefixCache, batch: Batch, prompts: list[list[int]], past, generated: list[list[int]]) -> None:
    """After `generate`: store each row's prompt + generated tokens (as far as the cache holds them) in place of the
    entry it continued (that entry is now a prefix of the new one)."""
    if past is None:
        return
    longest = max(batch.cached)
    fed = past.get_seq_length() - batch.width  # generated tokens fed back; the last sampled one never is
    for row, (prompt, ids) in enumerate(zip(prompts, generated)):
        m, n, k = batch.cached[row], len(prompt) - batch.cached[row], min(len(ids), fed)
        positions = torch.cat([torch.arange(longest - m, longest), torch.arange(batch.width - n, batch.width),
                               torch.arange(batch.width, batch.width + k)]).to(past.layers[0].keys.device)
        layers = [(layer.keys[row].index_select(1, positions), layer.values[row].index_select(1, positions))
                  for layer in past.layers]
        if cache.add(list(prompt) + list(ids[:k]), layers) is None:  # over the cap alone: keep what there was
            continue
        previous = batch.used[row]
        with cache._lock:
            entry = cache.entries.get(previous) if previous is not None else None
            if entry is not None and not entry.shared and len(entry.ids) == m:  # fully continued: superseded
                cache.drop(previous)

"""Rollout generation with and without KV-cache reuse: the in-process transformers client as it was (every turn
re-encodes the whole conversation) vs the reusing client (`kv_cache_tokens` > 0: the shared prompt prefix is encoded
once, each trajectory continues from its cache). Goal: >= 4x trajectories per second, outputs identical.

16 questions x 2 samples = 32 trajectories of up to 3 turns, run concurrently through the real agent (`run_many`) with
the embedded model (or --model) and the real local-web tools (a fresh Toolbox per side, so both pay the same page
parses), greedy decoding, the same batching on both sides. The sides run one after the other in one process
(`--order reuse,plain` to run the reusing client first).

    .venv/bin/python tests/bench/bench_generation.py [--questions 16] [--samples 2] [--model PATH]
"""

from __future__ import annotations

import argparse
import time

import torch

from wdlib import params
from wdlib.agent import run_many
from wdlib.aio import run_sync
from wdlib.llm import TransformersClient
from wdlib.tools import Toolbox
from wdlib.trajectory import read_jsonl


class TimedClient(TransformersClient):
    """Times the batched generate calls (they run one at a time)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generate_s, self.rows = 0.0, 0

    def _run_batch(self, prompts, samplings):
        start = time.perf_counter()
        try:
            return super()._run_batch(prompts, samplings)
        finally:
            self.generate_s += time.perf_counter() - start
            self.rows += len(prompts)


def side(name: str, client: TimedClient, cfg, items: list[dict], args) -> tuple[float, list]:
    with Toolbox.from_config(cfg) as toolbox:
        start = time.perf_counter()
        trajectories = run_sync(run_many(
            items, client, toolbox, samples=args.samples, concurrency=args.concurrency, progress=False,
            max_turns=args.max_turns, context_length=args.context, date="2025-01-01",
            sampling={"temperature": 0, "max_new_tokens": args.max_new_tokens}))
        wall = time.perf_counter() - start
    turns = [t.turns for t in trajectories]
    tool_calls = sum(len(t.tool_calls) for t in trajectories)
    tokens = sum(len(t.tokens["prompt_ids"]) + len(t.tokens["completion_ids"]) for t in trajectories)
    print(f"{name:8s} {len(trajectories)} trajectories in {wall:7.1f} s = {len(trajectories) / wall:.3f} "
          f"trajectories/s | generate {client.generate_s:7.1f} s over {len(client._batcher.batch_sizes)} batched "
          f"calls ({client.rows} rows) | turns {sum(turns)} ({min(turns)}-{max(turns)} per trajectory), "
          f"{tool_calls} tool calls | {tokens} conversation tokens", flush=True)
    if client.prefix_cache is not None:
        c = client.prefix_cache
        print(f"{'':8s} KV reuse: {c.stats['reused_tokens']} prompt tokens from the cache, {c.stats['encoded_tokens']}"
              f" encoded ({c.stats['shared_prefixes']} shared prefixes); left after the run: {len(c)} entries, "
              f"{c.tokens} tokens; {c.stats['evicted']} evicted, {c.stats['released']} released", flush=True)
    return wall, trajectories


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="params/smoke.yaml")
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--kv-cache-tokens", type=int, default=131072)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--order", default="plain,reuse", help="which side runs first (machine load drifts)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = params.load(args.params)
    seed_qa = cfg.resolve_path(cfg.synthesis.e2hqa.seed_file or "../shared/data/webdancer-samples/sample_qa.jsonl")
    rows = [r for r in read_jsonl(seed_qa) if r.get("question") and r["question"].isascii()][: args.questions]
    items = [{"question": r["question"], "gold": str(r["answer"]), "id": f"q{i}"} for i, r in enumerate(rows)]
    plain = TimedClient(args.model, device="cpu", dtype="float32", max_batch_size=args.concurrency)
    reuse = TimedClient(model=plain.model, tokenizer=plain.tokenizer, max_batch_size=args.concurrency,
                        kv_cache_tokens=args.kv_cache_tokens)
    from wdlib.agent import STOP_STRINGS

    plain._stop_criteria(STOP_STRINGS)  # the stop-string matcher takes seconds to build: once, before timing
    reuse._stop_cache = plain._stop_cache
    print(f"{len(items)} questions x {args.samples} samples, model {args.model}, greedy, {args.max_new_tokens} new "
          f"tokens per turn, max_turns {args.max_turns}, concurrency {args.concurrency}, torch threads "
          f"{torch.get_num_threads()}", flush=True)
    results = {name: side(name, {"plain": plain, "reuse": reuse}[name], cfg, items, args)
               for name in args.order.split(",")}
    (plain_s, plain_t), (reuse_s, reuse_t) = results["plain"], results["reuse"]
    key = lambda t: (t.qa_id, t.sample)  # noqa: E731
    before = {key(t): t.tokens for t in plain_t}
    same = sum(before.get(key(t)) == t.tokens for t in reuse_t)
    print(f"outputs identical: {same}/{len(reuse_t)} trajectories (token ids of every turn and observation)")
    print(f"speed-up: {plain_s / reuse_s:.1f}x (goal >= 4x)")


if __name__ == "__main__":
    main()

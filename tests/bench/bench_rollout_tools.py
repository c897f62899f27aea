"""Rollout tool-waiting: our concurrent agent rollout vs TRL 1.15's built-in `tools=` loop.

8 prompts × 4 generations, every tool call taking 200 ms (`web.tool_latency_s`), the same model, sampling, turn and
token limits on both sides, the same Toolbox behind the tools. Prints each side's wall time split into generation
and tool waiting, and the ratio of tool-waiting times (goal: ours ≤ 1/20 of TRL's). On CPU generation dominates the
total, so both are reported.

- ours: `wdlib.dapo.AgentRollout` (the trainer's rollout_func): all 32 trajectories run concurrently; whenever some
  wait on a tool the others keep generating, and concurrent turns are batched into one `generate`.
- TRL: `GRPOTrainer(tools=[search, visit])`: one batched `generate` per turn, then the tool calls of the batch run
  one sample after another (async tools are gathered only within one sample).

Generation time is the time spent inside `generate` (ours: the client's batch calls, which run one at a time;
TRL: `_generate_single_turn`); tool waiting is the rest of the rollout's wall time.

`--policy model` (default) samples the real model on both sides; how many tools it calls is up to the model (a
weakly trained 135M model may call none). `--policy scripted` isolates the two loops: on both sides every batched
generate call costs `--gen-s` seconds and returns fixed turns (search, then visit, then answer) for every sample,
so both run exactly 2 tool calls per trajectory through the real Toolbox.

    .venv/bin/python tests/bench/bench_rollout_tools.py [--policy scripted] [--model PATH] [--prompts 8]
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from wdlib import models, params
from wdlib.dapo import build_trainer, load_questions, prompt_dataset
from wdlib.react import prompt_messages
from wdlib.trajectory import load_qa
from wdlib.llm import TransformersClient
from wdlib.tools import Toolbox


class TimedClient(TransformersClient):
    """The in-process client, timing its batched generate calls (they run one at a time)."""

    generate_s = 0.0
    batches = 0

    def _run_batch(self, prompts, samplings):
        start = time.perf_counter()
        try:
            return super()._run_batch(prompts, samplings)
        finally:
            TimedClient.generate_s += time.perf_counter() - start
            TimedClient.batches += 1


SEARCH = ('<think>Search first.</think>\n<tool_call>\n{"name": "search", "arguments": {"query": ["sqlite pragma"]}}'
          '\n</tool_call>')
VISIT = ('<think>Read the page.</think>\n<tool_call>\n{"name": "visit", "arguments": {"url": '
         '["https://docs.python.org/3/library/sqlite3.html"], "goal": "what PRAGMA does"}}\n</tool_call>')
ANSWER = "<think>Done.</think>\n<answer>PRAGMA</answer>"
SCRIPT = [SEARCH, VISIT, ANSWER]  # --script search-search: [SEARCH, SEARCH, ANSWER]


def scripted_turn(tokenizer, prompt_ids: list[int]) -> list[int]:
    """The next scripted turn of this conversation (by the number of assistant turns so far)."""
    k = tokenizer.decode(prompt_ids).count("<|im_start|>assistant") - 1
    return tokenizer(SCRIPT[min(k, len(SCRIPT) - 1)], add_special_tokens=False)["input_ids"]


class ScriptedClient(TimedClient):
    """Same batching as the real client; each batched call costs GEN_S seconds and returns the scripted turns."""

    gen_s = 1.0

    def _run_batch(self, prompts, samplings):
        from wdlib.llm import Reply

        start = time.perf_counter()
        time.sleep(ScriptedClient.gen_s)
        replies = []
        for p in prompts:
            ids = scripted_turn(self.tokenizer, p)
            replies.append(Reply(text=self.tokenizer.decode(ids), prompt_tokens=len(p), completion_tokens=len(ids),
                                 finish_reason="stop", token_ids=ids))
        TimedClient.generate_s += time.perf_counter() - start
        TimedClient.batches += 1
        return replies


CLIENT = {"model": TimedClient, "scripted": ScriptedClient}
POLICY = ["model"]


@contextmanager
def timed_client(trainer, max_batch_size: int = 64, kv_cache_tokens: int = 0):
    yield CLIENT[POLICY[0]](model=trainer.model, tokenizer=trainer.processing_class, max_batch_size=max_batch_size,
                            kv_cache_tokens=kv_cache_tokens)


class CountingToolbox:
    """Counts the calls and their time; the work is the real Toolbox's (200 ms latency each)."""

    def __init__(self, toolbox):
        self.toolbox, self.calls, self.call_s = toolbox, 0, 0.0

    async def call(self, name, arguments):
        start = time.perf_counter()
        try:
            return await self.toolbox.call(name, arguments)
        finally:
            self.calls += 1
            self.call_s += time.perf_counter() - start


def run_ours(cfg, toolbox, qa, model_path, prompts):
    counting = CountingToolbox(toolbox)
    trainer = build_trainer(cfg, counting, qa=qa, model=model_path, client_factory=timed_client,
                            output_dir=Path("/tmp/dapo/bench-ours"))
    TimedClient.generate_s, TimedClient.batches = 0.0, 0
    start = time.perf_counter()
    out = trainer.agent_rollout(prompts, trainer)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "generate_s": TimedClient.generate_s, "tool_calls": counting.calls,
            "tool_call_s": counting.call_s, "generate_calls": TimedClient.batches,
            "turns": sum(out["turns"]), "model_tokens": sum(out["model_tokens"])}


def run_trl(cfg, toolbox, qa, model_path, prompts):
    from trl import GRPOConfig, GRPOTrainer

    counting = CountingToolbox(toolbox)

    async def search(query: list[str]) -> str:
        """Performs batched web searches: supply an array 'query'; the tool retrieves the top 10 results for each
        query in one call.

        Args:
            query: Array of query strings. Include multiple complementary search queries in a single call.
        """
        return await counting.call("search", {"query": query})

    async def visit(url: list[str], goal: str) -> str:
        """Visit webpage(s) and return the summary of the content.

        Args:
            url: The URL(s) of the webpage(s) to visit. Can be a single URL or an array of URLs.
            goal: The specific information goal for visiting webpage(s).
        """
        return await counting.call("visit", {"url": url, "goal": goal})

    d = cfg.dapo
    args = GRPOConfig(output_dir="/tmp/dapo/bench-trl", use_cpu=True, report_to=[], num_generations=d.num_generations,
                      per_device_train_batch_size=len(prompts), max_completion_length=d.max_completion_length,
                      temperature=d.temperature, top_p=d.top_p, max_tool_calling_iterations=d.max_turns - 1,
                      generation_kwargs={"max_new_tokens": d.max_new_tokens_per_turn}, save_strategy="no",
                      loss_type="dapo", beta=0.0)
    trainer = GRPOTrainer(model=model_path, processing_class=models.load_tokenizer(model_path),
                          reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], args=args,
                          train_dataset=prompt_dataset(qa), tools=[search, visit])
    generate_s, calls = [0.0], [0]
    single_turn = trainer._generate_single_turn

    def timed_single_turn(prompt_ids, *a, **k):
        start = time.perf_counter()
        try:
            if POLICY[0] == "scripted":  # same cost per batched call as ours, same turns, ended by <|im_end|>
                time.sleep(ScriptedClient.gen_s)
                end = trainer.processing_class.convert_tokens_to_ids("<|im_end|>")
                return [scripted_turn(trainer.processing_class, p) + [end] for p in prompt_ids], None
            return single_turn(prompt_ids, *a, **k)
        finally:
            generate_s[0] += time.perf_counter() - start
            calls[0] += 1

    trainer._generate_single_turn = timed_single_turn
    generate = trainer._generate
    wall = [0.0]

    def timed_generate(p):
        start = time.perf_counter()
        try:
            return generate(p)
        finally:
            wall[0] = time.perf_counter() - start

    trainer._generate = timed_generate
    trainer.model.train()
    inputs = [{"prompt": p} for p in prompts]
    out = trainer._generate_and_score_completions(inputs)
    model_tokens = int((out["completion_mask"] * out["tool_mask"]).sum()) if "tool_mask" in out else 0
    return {"wall_s": wall[0], "generate_s": generate_s[0], "tool_calls": counting.calls,
            "tool_call_s": counting.call_s, "generate_calls": calls[0], "turns": None, "model_tokens": model_tokens}


def report(name, r):
    wait = r["wall_s"] - r["generate_s"]
    per_call = wait / r["tool_calls"] if r["tool_calls"] else float("nan")
    print(f"{name:5s} wall {r['wall_s']:7.1f} s = generation {r['generate_s']:7.1f} s ({r['generate_calls']} generate "
          f"calls) + tool waiting {wait:6.1f} s | {r['tool_calls']} tool calls ({r['tool_call_s']:.1f} s of call time),"
          f" {per_call:.3f} s waited per call | {r['model_tokens']} model tokens")
    return wait


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="params/smoke.yaml")
    parser.add_argument("--model", default=None, help="default: the params' SFT checkpoint if present, else policy")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--only", choices=["ours", "trl"], default=None)
    parser.add_argument("--policy", choices=["model", "scripted"], default="model")
    parser.add_argument("--gen-s", type=float, default=1.0, help="scripted: seconds per batched generate call")
    parser.add_argument("--script", choices=["search-visit", "search-search"], default="search-visit",
                        help="scripted: the two tool calls (visit does CPU work: page extraction; search is light)")
    args = parser.parse_args()
    if args.script == "search-search":
        SCRIPT[:] = [SEARCH, SEARCH, ANSWER]
    POLICY[0], ScriptedClient.gen_s = args.policy, args.gen_s
    torch.set_num_threads(2)
    torch.manual_seed(0)

    cfg = params.load(args.params)
    cfg.web.tool_latency_s = args.latency
    d = cfg.dapo
    d.num_generations, d.max_turns, d.max_new_tokens_per_turn = args.generations, args.max_turns, args.max_new_tokens
    d.rollout_concurrency = args.prompts * args.generations
    if args.policy == "scripted":
        d.max_completion_length = 4096  # two tool responses fit on both sides; nothing is generated for real
    from wdlib.dapo import init_model_path

    model_path = args.model or init_model_path(cfg)
    qa = load_questions(cfg)
    held_out = cfg.paths.qa_eval
    if len(qa) < args.prompts and held_out.is_file():  # a smoke run has 6 training questions: top up
        qa += load_qa(held_out)
    qa = qa[: args.prompts]
    prompts = [prompt_messages(q.question) for q in qa for _ in range(args.generations)]
    print(f"policy {args.policy}" + (f" ({args.script}, {args.gen_s} s per batched generate)"
                                      if args.policy == "scripted" else "")
          + f"; model {model_path}; {len(qa)} prompts × {args.generations} generations; tool latency "
          f"{args.latency * 1000:.0f} ms; max_turns {d.max_turns}, {d.max_new_tokens_per_turn} new tokens per turn, "
          f"max_completion_length {d.max_completion_length}; torch threads {torch.get_num_threads()}")
    results = {}
    with Toolbox.from_config(cfg) as toolbox:
        if args.policy == "scripted":
            # Warm the page cache: 32 simultaneous first visits of one URL would each extract the page (the
            # Toolbox does not merge identical in-flight fetches), which says nothing about either loop.
            from wdlib.aio import run_sync

            run_sync(toolbox.visit(["https://docs.python.org/3/library/sqlite3.html"], "what PRAGMA does"))
        if args.only in (None, "ours"):
            results["ours"] = run_ours(cfg, toolbox, qa, model_path, prompts)
            report("ours", results["ours"])
        if args.only in (None, "trl"):
            results["trl"] = run_trl(cfg, toolbox, qa, model_path, prompts)
            report("TRL", results["trl"])
    if len(results) == 2:
        ours_wait = report("ours", results["ours"])
        trl_wait = report("TRL", results["trl"])
        print(f"tool-waiting ratio ours/TRL = {ours_wait / trl_wait:.3f} (goal ≤ 0.05); "
              f"total wall ratio ours/TRL = {results['ours']['wall_s'] / results['trl']['wall_s']:.2f}")


if __name__ == "__main__":
    main()

"""run_many(concurrency=32) vs one trajectory after another. Goal: >= 20x faster.

32 trajectories of 3 turns (search, visit, answer) each: a model endpoint on loopback that answers every request
after a fixed latency (a real HTTP server speaking the OpenAI API, in its own process like a real server, driven by
the real OpenAIClient), and a toolbox whose every call takes 200 ms.
Run: .venv/bin/python tests/bench/bench_agent_concurrency.py [--model-latency 0.2] [--tool-latency 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (the loopback server)

from openai_loopback import LoopbackOpenAI, completion  # noqa: E402
from wdlib.agent import run_agent, run_many  # noqa: E402
from wdlib.llm import OpenAIClient  # noqa: E402

TURNS = [
    '<think>Search first.</think>\n<tool_call>\n{"name": "search", "arguments": {"query": ["q"]}}\n</tool_call>',
    '<think>Read.</think>\n<tool_call>\n{"name": "visit", "arguments": {"url": "https://a.org", "goal": "g"}}\n'
    '</tool_call>',
    "<think>Done.</think>\n<answer>42</answer>",
]


class SlowToolbox:
    def __init__(self, latency: float):
        self.latency = latency

    async def call(self, name, arguments):
        await asyncio.sleep(self.latency)
        return f"{name} result\n"


def serve(latency: float, ready, stop) -> None:
    """The model endpoint, in its own process: every reply after `latency` seconds."""

    async def handler(body):
        await asyncio.sleep(latency)
        k = sum(m["role"] == "assistant" for m in body["messages"])
        return 200, completion(TURNS[min(k, len(TURNS) - 1)])

    with LoopbackOpenAI(handler) as server:
        ready.put(server.base_url)
        stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--tool-latency", type=float, default=0.2)
    ap.add_argument("--model-latency", type=float, default=0.2)
    args = ap.parse_args()

    questions = [{"question": f"question {i}", "gold": "42"} for i in range(args.n)]
    toolbox = SlowToolbox(args.tool_latency)
    ctx = multiprocessing.get_context("fork")
    ready, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=serve, args=(args.model_latency, ready, stop), daemon=True)
    server.start()
    try:
        client = OpenAIClient("bench", ready.get(timeout=30), concurrency=args.concurrency)

        async def sequential():
            return [await run_agent(q["question"], client, toolbox, gold=q["gold"]) for q in questions]

        t0 = time.perf_counter()
        one_by_one = asyncio.run(sequential())
        t_seq = time.perf_counter() - t0
        t0 = time.perf_counter()
        together = asyncio.run(run_many(questions, client, toolbox, concurrency=args.concurrency, progress=False))
        t_conc = time.perf_counter() - t0
    finally:
        stop.set()
        server.join(timeout=10)
    assert all(t.prediction == "42" for t in one_by_one + together) and len(together) == args.n
    ideal = args.n * (3 * args.model_latency + 2 * args.tool_latency)
    print(f"{args.n} trajectories x 3 turns, model latency {args.model_latency * 1000:.0f} ms, "
          f"tool latency {args.tool_latency * 1000:.0f} ms (sequential lower bound {ideal:.1f} s)")
    print(f"sequential:                 {t_seq:7.2f} s")
    print(f"run_many(concurrency={args.concurrency}):  {t_conc:7.2f} s")
    print(f"speed-up: {t_seq / t_conc:.1f}x (goal >= 20x)")


if __name__ == "__main__":
    main()

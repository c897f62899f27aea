"""A process for tests/test_adversarial.py to `kill -9`: runs scripted trajectories with large non-ASCII records
into a JSONL file, resuming from what the file holds, and prints each id once its record is written.

    python tests/adversarial_worker.py PATH N
"""

from __future__ import annotations

import asyncio
import sys

from wdlib.agent import run_many
from wdlib.llm import Reply
from wdlib.trajectory import append_jsonl, done_ids

LONG_ANSWER = "答え—ответ—réponse " * 8_000  # ~400 KB of UTF-8 per record: kills land inside writes too


class SlowModel:
    model_name, max_new_tokens = "slow-model", 64

    async def chat(self, messages, **sampling):
        await asyncio.sleep(0.05)
        if sum(m["role"] == "assistant" for m in messages) < 2:
            call = '{"name": "search", "arguments": {"query": ["Ünïcödé 検索"]}}'
            return Reply(text=f"<think>Ищу «данные» 数据 🔎</think>\n<tool_call>\n{call}\n</tool_call>")
        return Reply(text=f"<think>готово ✅</think>\n<answer>{LONG_ANSWER}</answer>")


class Tools:
    async def call(self, name, arguments):
        return "résultat: " + "ß" * 5_000


def main(path: str, n: int) -> None:
    def save(trajectory):
        append_jsonl(path, [trajectory])
        print(trajectory.id, flush=True)

    items = [{"question": f"Вопрос {i}: 問題 {i}?", "answer": "ответ", "id": f"q{i}"} for i in range(n)]
    print("ready", flush=True)
    asyncio.run(run_many(items, SlowModel(), Tools(), concurrency=8, on_result=save, skip_ids=done_ids(path),
                         progress=False))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

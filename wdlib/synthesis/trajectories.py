"""Teacher trajectories with rejection sampling: `sample_trajectories` runs the teacher agent over QA pairs in
rounds: round k samples every question that has no passing trajectory yet (sample index k), appends each trajectory
to JSONL as it finishes, then runs the filter funnel (`wdlib.synthesis.filters`); a question stops at its first
passing sample. Re-running skips finished (question, sample) pairs, so an interrupted run loses nothing it finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wdlib.agent import resolve_prompt, run_many
from wdlib.config import Config
from wdlib.synthesis.filters import arun_funnel
from wdlib.trajectory import QAPair, Trajectory, append_jsonl, load_trajectories, trajectory_id, write_jsonl


async def sample_trajectories(qa: list[QAPair], client: Any, toolbox: Any, cfg: Config, path: str | Path, *,
                              judge_client: Any = None, progress: bool = True) -> list[Trajectory]:
    """Teacher trajectories with rejection sampling, resumable.

    Round k (k < `trajectories.samples_per_question`) runs sample k of every question that has no kept trajectory
    yet; each trajectory is appended to `path` the moment it finishes; then the filter funnel judges the round and
    the file is rewritten (atomically) with the verdicts. A re-run reads the file, skips every (question, sample)
    already there and filters only what has no verdict, so an interruption loses nothing that finished.
    Long CoT (`trajectories.cot: long`, a reasoning teacher) needs no change here: the agent turns the backend's
    reasoning_content into the <think> block. Returns every trajectory of these questions (kept and dropped).
    """
    t = cfg.trajectories
    path = Path(path)
    model = getattr(client, "model_name", type(client).__name__)
    if t.cot == "long" and not cfg.models.teacher.reasoning:
        raise ValueError("trajectories.cot is 'long' but models.teacher.reasoning is false: long CoT needs a "
                         "reasoning teacher whose reasoning_content becomes the <think> block")
    wanted = {q.id for q in qa}
    on_disk = {tr.id: tr for tr in load_trajectories(path)}  # ours and, possibly, other runs' (kept as they are)
    agent_kwargs = dict(max_turns=t.max_turns, max_total_tokens=t.max_total_tokens,
                        context_length=cfg.models.teacher.context_length,
                        sampling={"temperature": t.temperature, "top_p": t.top_p}, prompt=resolve_prompt(cfg))

    async def judge_pending() -> None:
        pending = [tr for tr in on_disk.values() if tr.qa_id in wanted and "kept" not in (tr.filters or {})]
        if pending:
            await arun_funnel(pending, cfg, judge_client, progress=False)
            write_jsonl(path, on_disk.values())

    await judge_pending()  # a previous run killed between a round and its funnel
    for k in range(t.samples_per_question):
        passed = {tr.qa_id for tr in on_disk.values() if (tr.filters or {}).get("kept")}
        todo = [q for q in qa if q.id not in passed]
        if not todo:
            break
        skip = set(on_disk) | {trajectory_id(q.id, j, model) for q in todo for j in range(k)}

        def keep(tr: Trajectory) -> None:
            append_jsonl(path, [tr])
            on_disk[tr.id] = tr

        if progress:
            new = sum(trajectory_id(q.id, k, model) not in skip for q in todo)
            print(f"round {k + 1}/{t.samples_per_question}: {len(todo)} questions without a kept trajectory, "
                  f"{new} samples to run ({len(todo) - new} already in {path.name})")
        await run_many(todo, client, toolbox, concurrency=t.concurrency, samples=k + 1, skip_ids=skip,
                       on_result=keep, progress=progress, **agent_kwargs)
        await judge_pending()
    return [tr for tr in on_disk.values() if tr.qa_id in wanted]

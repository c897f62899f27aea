"""Evaluation runs: the agent k times (`eval.runs`) over each benchmark with each model (the base policy, the run's
SFT and DAPO checkpoints, `eval.extra_models`), one model in memory at a time. Every finished trajectory is judged and
appended at once to `cfg.paths.eval_run(benchmark, model, run)`, so every run resumes.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from wdlib.config import Config, ModelSpec
from wdlib.evaluate.benchmarks import Benchmark, judge_mode
from wdlib.labels import STAGES
from wdlib.trajectory import QAPair, append_jsonl, done_ids, read_jsonl, write_jsonl

log = logging.getLogger(__name__)


# ================================================================== models
def _is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def eval_models(cfg: Config) -> tuple[dict[str, ModelSpec], dict[str, str]]:
    """label → ModelSpec for `eval.checkpoints` (base = models.policy; sft/dapo = the run's checkpoints, when they
    exist; both in `eval.dtype`) plus `eval.extra_models` (as given); the second value says why a requested checkpoint
    is skipped."""
    models: dict[str, ModelSpec] = {}
    skipped: dict[str, str] = {}
    policy = cfg.models.policy
    if cfg.eval.dtype != "same":
        policy = policy.model_copy(update={"dtype": cfg.eval.dtype})
    for stage in cfg.eval.checkpoints:
        if stage == "base":
            models["base"] = policy
            continue
        path = cfg.paths.checkpoint_dir(stage) if stage in STAGES else cfg.resolve_path(stage)
        label = stage if stage in STAGES else _safe_label(Path(stage).name)
        if _is_checkpoint(path):
            # A checkpoint is served like the policy (same backend, dtype, limits), from its folder.
            models[label] = policy.model_copy(update={"name": str(path)})
        else:
            skipped[label] = f"no checkpoint at {path} (run notebook {'04' if stage == 'dapo' else '03'} first)"
    for label, spec in cfg.eval.extra_models.items():
        models[_safe_label(label)] = spec
    return models, skipped


def _safe_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("_") or "model"


# ================================================================== judging
async def verdict(benchmark: str, qa: QAPair, prediction: str | None, cfg: Config,
                  judge_client: Any = None, mode: str | None = None) -> dict[str, Any]:
    """Judge one answer per params (`judge_mode`, or `mode`): GAIA under `rules` uses the official GAIA scorer alone;
    everything else goes through `wdlib.judge.judge_answer` (rules, the graded LLM judge, or the equivalence judge)."""
    from wdlib.judge import gaia_match, judge_answer

    mode = mode or judge_mode(cfg, benchmark)
    if benchmark == "gaia" and mode == "rules":
        if prediction is None or not str(prediction).strip():
            return {"correct": False, "method": "no-answer", "mode": mode, "raw": None}
        return {"correct": gaia_match(prediction, qa.answer), "method": "gaia-scorer", "mode": mode, "raw": None}
    return await judge_answer(qa.question, qa.answer, prediction, cfg, judge_client, mode=mode)


async def _safe(coro) -> dict[str, Any]:
    try:
        return await coro
    except Exception as exc:  # the judge endpoint down after retries: keep the trajectory, retry the verdict later
        return {"correct": None, "method": "error", "raw": f"{type(exc).__name__}: {exc}"}


async def judge_record(record: dict, benchmark: str, qa: QAPair, cfg: Config, judge_client: Any,
                       audit_clients: dict[str, Any]) -> bool:
    """Fill in what a record lacks: the scoring verdict (`judge`, when missing or without a verdict) and each audit
    judge's (`judges[name]`, `eval.judges`). Returns whether anything was asked."""
    asked = False
    if (record.get("judge") or {}).get("correct") is None:
        record["judge"] = await _safe(verdict(benchmark, qa, record.get("prediction"), cfg, judge_client))
        asked = True
    audits = record.setdefault("judges", {})
    for spec in cfg.eval.judges:
        if (audits.get(spec.name) or {}).get("correct") is None:
            audits[spec.name] = await _safe(verdict(benchmark, qa, record.get("prediction"), cfg,
                                                    audit_clients.get(spec.name), mode=spec.mode))
            asked = True
    if not audits:
        record.pop("judges")
    return asked


async def _judge_pending(path: Path, benchmark: str, by_id: dict[str, QAPair], cfg: Config, judge_client: Any,
                         audit_clients: dict[str, Any]) -> int:
    """Judge again saved trajectories whose verdicts are missing (the judge was down, its reply unreadable, an audit
    judge added since): no agent re-run needed."""
    records = list(read_jsonl(path))
    asked = 0
    for record in records:
        if record.get("qa_id") in by_id:
            asked += await judge_record(record, benchmark, by_id[record["qa_id"]], cfg, judge_client, audit_clients)
    if asked:
        write_jsonl(path, records)
    return asked


async def evaluate_model(label: str, client: Any, toolbox: Any, benchmark: Benchmark, cfg: Config, *,
                         judge_client: Any = None, context_length: int | None = None,
                         progress: bool = True, audit_clients: dict[str, Any] | None = None) -> dict[str, int]:
    """Run the agent k times (eval.runs) over the benchmark with one model; resumable per run file.

    The k runs are independent samples, so all (question, run) pairs go out together, `eval.concurrency` at a time
    (an in-process model batches them). Each finished trajectory is judged and appended at once to
    eval/<benchmark>/<label>/run<r>.jsonl; a re-run skips the questions already there. A trajectory whose agent call
    raised is not written (so it is retried next time). Returns counts {"new", "skipped", "failed", "rejudged"}.
    """
    from tqdm.auto import tqdm

    from wdlib.agent import resolve_prompt, run_agent

    ecfg = cfg.eval
    prompt = resolve_prompt(cfg)
    by_id = {qa.id: qa for qa in benchmark.items}
    sampling = {"temperature": ecfg.temperature, "top_p": ecfg.top_p}
    if ecfg.repetition_penalty != 1.0:  # sent only when set: not every endpoint accepts the parameter
        sampling["repetition_penalty"] = ecfg.repetition_penalty
    audit_clients = audit_clients or {}
    context_length = context_length or cfg.models.policy.context_length  # of the model evaluated (its spec)
    max_total_tokens = ecfg.max_total_tokens or context_length
    counts = {"new": 0, "skipped": 0, "failed": 0, "rejudged": 0}
    jobs: list[tuple[QAPair, int]] = []
    for run in range(ecfg.runs):
        path = cfg.paths.eval_run(benchmark.name, label, run)
        counts["rejudged"] += await _judge_pending(path, benchmark.name, by_id, cfg, judge_client, audit_clients)
        done = done_ids(path, "qa_id")
        jobs += [(qa, run) for qa in benchmark.items if qa.id not in done]
    counts["skipped"] = len(benchmark.items) * ecfg.runs - len(jobs)
    if not jobs:
        return counts
    limit = asyncio.Semaphore(ecfg.concurrency)
    bar = tqdm(total=len(jobs), desc=f"{benchmark.name}/{label} ({ecfg.runs} runs)", disable=not progress)

    async def one(qa: QAPair, run: int) -> None:
        async with limit:
            try:
                traj = await run_agent(qa.question, client, toolbox, gold=qa.answer, qa_id=qa.id,
                                       max_turns=ecfg.max_turns, max_total_tokens=max_total_tokens,
                                       context_length=context_length, sampling=sampling, sample=run,
                                       prompt=prompt, max_format_errors=ecfg.max_format_errors)
            except Exception as exc:  # the agent should not raise; if it does, retry on the next call
                log.warning("%s/%s run %d: %s failed: %s: %s", benchmark.name, label, run, qa.id,
                            type(exc).__name__, exc)
                counts["failed"] += 1
                return
            finally:
                bar.update(1)
        record = traj.to_dict()
        await judge_record(record, benchmark.name, qa, cfg, judge_client, audit_clients)
        record["eval"] = {"benchmark": benchmark.name, "model": label, "run": run, "level": str(qa.difficulty)}
        append_jsonl(cfg.paths.eval_run(benchmark.name, label, run), [record])
        counts["new"] += 1

    try:
        await asyncio.gather(*(one(qa, run) for qa, run in jobs))
    finally:
        bar.close()
    return counts


def _runs_complete(cfg: Config, benchmarks: dict[str, Benchmark], label: str) -> bool:
    for bench in benchmarks.values():
        ids = {qa.id for qa in bench.items}
        for run in range(cfg.eval.runs):
            if not ids <= done_ids(cfg.paths.eval_run(bench.name, label, run), "qa_id"):
                return False
    return True


async def _close(client: Any) -> None:
    """Let a client release what it holds (HTTP pools, batching tasks), if it knows how."""
    close = getattr(client, "aclose", None) or getattr(client, "close", None)
    if callable(close):
        try:
            result = close()
            if asyncio.iscoroutine(result):
                await result
        except Exception as exc:
            log.debug("closing client: %s", exc)


def _free_memory() -> None:
    """Free a model's weights between evaluations (after the last reference to its client is gone)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


async def _evaluate_all(cfg: Config, benchmarks: dict[str, Benchmark], models: dict[str, ModelSpec],
                        device: str, progress: bool) -> dict[str, dict[str, dict[str, int]]]:
    from wdlib import llm
    from wdlib.tools import Toolbox

    report: dict[str, dict[str, dict[str, int]]] = {}
    modes = {judge_mode(cfg, name) for name in benchmarks}
    judge_client = llm.make_client(cfg.models.judge) if modes - {"rules"} and cfg.models.judge else None
    audit_clients = {j.name: llm.make_client(j.model or cfg.models.judge) for j in cfg.eval.judges
                     if j.mode != "rules" and (j.model or cfg.models.judge)}
    todo = {}
    for label, spec in models.items():
        if _runs_complete(cfg, benchmarks, label):  # resume without loading the model; verdicts still completed
            report[label] = {}
            for name, bench in benchmarks.items():
                by_id = {qa.id: qa for qa in bench.items}
                rejudged = sum([await _judge_pending(cfg.paths.eval_run(name, label, run), name, by_id, cfg,
                                                     judge_client, audit_clients) for run in range(cfg.eval.runs)])
                report[label][name] = {"new": 0, "skipped": len(bench.items) * cfg.eval.runs, "rejudged": rejudged}
        else:
            todo[label] = spec
    if not todo:
        return report
    with Toolbox.from_config(cfg) as toolbox:
        for label, spec in todo.items():
            t0 = time.time()
            client = llm.make_client(spec, device=device)
            try:
                report[label] = {}
                for name, bench in benchmarks.items():
                    report[label][name] = await evaluate_model(label, client, toolbox, bench, cfg,
                                                               judge_client=judge_client, audit_clients=audit_clients,
                                                               context_length=spec.context_length, progress=progress)
            finally:
                await _close(client)
                del client
                _free_memory()
            log.info("evaluated %s in %.0f s", label, time.time() - t0)
        # tool calls, errors and, replaying a snapshot, what it lacked (snapshot_misses)
        cfg.paths.eval_toolbox_stats.parent.mkdir(parents=True, exist_ok=True)
        cfg.paths.eval_toolbox_stats.write_text(json.dumps(toolbox.stats, indent=1))
    return report


def run_evaluation(cfg: Config, benchmarks: dict[str, Benchmark], models: dict[str, ModelSpec], *,
                   progress: bool = True) -> dict[str, dict[str, dict[str, int]]]:
    """Evaluate every model on every benchmark, k runs each; one model in memory at a time. Sync (Jupyter-safe)."""
    from wdlib.aio import run_sync
    from wdlib.models import pick_device

    device = pick_device(cfg.run.device)
    return run_sync(_evaluate_all(cfg, benchmarks, models, device, progress))

"""DAPO step time on params/smoke.yaml: rollouts that re-encode every turn (`models.policy.kv_cache_tokens: 0`) in
fp32 vs KV-cache reuse in fp32 vs KV-cache reuse with bf16 (rollouts from a bf16 copy of the policy,
`dapo.rollout_dtype`; the update under bf16 autocast, `trainer_kwargs.bf16`), same settings and seed, side by side in
one run. Goal: >= 2x less time per step. bf16 pays off on CPUs with AVX512-BF16 / AMX; elsewhere the bf16 side
runs in fp32 (`wdlib.models.cpu_dtype` says so).

DAPO starts from an SFT checkpoint that writes well-formed turns, or the rollouts are single malformed turns: by
default the smoke run's (`make smoke` first: `outputs/smoke/checkpoints/sft`, trained on the graded teacher episodes),
with its DAPO questions (`qa_dapo.jsonl`); `--init PATH --qa FILE` for others. Each side then trains `--steps` DAPO
steps from it in its own run folder (smoke's DAPO settings: one group of 4 rollouts per step, up to 3 turns, dynamic
sampling with one refill). Seconds per step = wall time of `train()` / steps, beside the trainer's own split into
rollout and training time.

On a checkout from before `kv_cache_tokens` existed only the `plain` side runs: run it there with the same --init
(PYTHONPATH=that-checkout) to compare with the code as it was.

    .venv/bin/python tests/bench/bench_dapo_step.py [--init PATH] [--qa FILE] [--steps 2] [--sides plain,reuse,bf16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from wdlib import params
from wdlib.dapo import train
from wdlib.trajectory import load_qa, write_jsonl


def side(cfg, name: str, init: str, qa, steps: int, kv_cache_tokens: int | None, bf16: bool = False) -> dict:
    cfg = cfg.model_copy(deep=True)
    cfg.run.name = f"{cfg.run.name}-{name}"
    if kv_cache_tokens is not None:
        cfg.models.policy.kv_cache_tokens = kv_cache_tokens
    if bf16:  # rollouts from a bf16 copy of the policy, the policy update under bf16 autocast (fp32 master weights)
        cfg.dapo.rollout_dtype = "bfloat16"
        cfg.dapo.trainer_kwargs = {**cfg.dapo.trainer_kwargs, "bf16": True}
    elif "rollout_dtype" in type(cfg.dapo).model_fields:
        cfg.dapo.rollout_dtype = "same"
        cfg.dapo.trainer_kwargs = {k: v for k, v in cfg.dapo.trainer_kwargs.items() if k != "bf16"}
    d = cfg.dapo
    d.init, d.max_steps, d.save_steps = init, steps, 10 ** 6
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(cfg.run_dir / "qa.jsonl", qa)
    start = time.perf_counter()
    summary = train(cfg, resume=False)
    wall = time.perf_counter() - start
    logs = [h for h in summary["log_history"] if "reward" in h]
    mean = lambda key: statistics.mean(h.get(key, float("nan")) for h in logs)  # noqa: E731
    result = {"wall_s": wall, "steps": summary["global_step"], "s_per_step": wall / max(1, summary["global_step"]),
              "rollout_s": mean("time/rollout_s"), "train_s": mean("time/train_s"), "turns": mean("rollout/turns"),
              "tool_calls": mean("rollout/tool_calls"), "reward": mean("reward"),
              "kept": mean("dapo/kept_groups"), "refills": mean("dapo/refills")}
    print(f"{name:6s} {result['steps']} steps in {wall:6.0f} s = {result['s_per_step']:6.1f} s/step (per step: rollout "
          f"{result['rollout_s']:6.1f} s incl. refills = {result['rollout_s'] / (1 + result['refills']):5.1f} s per "
          f"round of rollouts, training {result['train_s']:6.1f} s) | turns "
          f"{result['turns']:.2f}, tool calls {result['tool_calls']:.2f}, reward {result['reward']:+.3f}, "
          f"refills {result['refills']:.1f}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="params/smoke.yaml")
    parser.add_argument("--init", default=None, help="DAPO init checkpoint (default: the smoke run's SFT checkpoint)")
    parser.add_argument("--qa", default=None, help="DAPO questions (default: the smoke run's qa_dapo.jsonl)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--sides", default="plain,reuse,bf16",
                        help="plain: re-encode every turn, fp32; reuse: KV reuse, fp32; bf16: KV reuse + bf16")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--out", default="/tmp/dapo-step")
    args = parser.parse_args()
    torch.set_num_threads(2)

    cfg = params.load(args.params)
    init = Path(args.init) if args.init else cfg.paths.checkpoint_dir("sft")
    qa_file = Path(args.qa) if args.qa else cfg.paths.qa_dapo
    if not (init / "config.json").is_file() or not qa_file.is_file():
        sys.exit(f"needs an SFT checkpoint ({init}) and DAPO questions ({qa_file}): run `make smoke` first, or pass "
                 "--init and --qa")
    qa = load_qa(qa_file)
    cfg.run.output_dir, cfg.run.name = args.out, f"step-{int(time.time())}"
    cfg.wandb.mode = "disabled"
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    has_reuse = "kv_cache_tokens" in type(cfg.models.policy).model_fields
    d = cfg.dapo
    print(f"init {init}; {args.steps} DAPO steps per side; {d.num_generations} rollouts per group, "
          f"{d.per_device_train_batch_size} per step, max_turns {d.max_turns}, {d.max_new_tokens_per_turn} tokens per "
          f"turn, max_refills {d.max_refills}; torch threads {torch.get_num_threads()}", flush=True)
    has_bf16 = "rollout_dtype" in type(d).model_fields
    results = {}
    for name in args.sides.split(","):
        if (name == "reuse" and not has_reuse) or (name == "bf16" and not has_bf16):
            print(f"{name}: this checkout has no {'kv_cache_tokens' if name == 'reuse' else 'dapo.rollout_dtype'}; "
                  "skipped")
            continue
        tokens = None if not has_reuse else (0 if name == "plain" else cfg.models.policy.kv_cache_tokens)
        results[name] = side(cfg, name, str(init), qa[: args.questions], args.steps, tokens, bf16=name == "bf16")
    base = results.get("plain")
    for name, r in results.items():
        if base is not None and name != "plain":
            print(f"DAPO step speed-up, {name} vs plain: {base['s_per_step'] / r['s_per_step']:.1f}x (rollout "
                  f"{base['rollout_s'] / r['rollout_s']:.1f}x, training {base['train_s'] / r['train_s']:.1f}x; "
                  "goal >= 2x per step)")


if __name__ == "__main__":
    main()

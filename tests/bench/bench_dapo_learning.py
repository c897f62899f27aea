"""Learning signal on CPU: N DAPO steps from the smoke SFT checkpoint raise the mean reward (format part at least).

Rolls out the same questions before and after training (same sampling: the DAPO temperature, a fixed seed) and
prints format / answer / total reward means, plus the per-step training curve. A 135M model rarely answers right,
so the format part is the one expected to move.

    .venv/bin/python tests/bench/bench_dapo_learning.py --steps 8 [--init PATH] [--lr 2e-5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from wdlib import config
from wdlib.aio import run_sync
from wdlib.dapo import AgentRollout, init_model_path, load_questions, prompt_messages, train
from wdlib.llm import TransformersClient
from wdlib.rewards import answer_scores, format_score
from wdlib.tools import Toolbox


def evaluate(cfg, model_path: str, qa, samples: int, seed: int) -> dict[str, float]:
    """Mean format / answer / total reward of `samples` rollouts per question (what DAPO optimizes)."""
    torch.manual_seed(seed)
    client = TransformersClient(model_path, device="cpu", dtype="float32", max_batch_size=len(qa) * samples)
    with Toolbox.from_config(cfg) as toolbox:
        rollout = AgentRollout(cfg, toolbox, qa)
        prompts = [prompt_messages(q.question) for q in qa for _ in range(samples)]
        trajectories = rollout.run(prompts, client)
    fmt = [format_score(t) for t in trajectories]
    ans = run_sync(answer_scores(trajectories, cfg))
    w_f, w_a = cfg.rewards.format_weight, cfg.rewards.answer_weight
    return {"format": statistics.mean(fmt), "answer": statistics.mean(ans),
            "total": statistics.mean(w_f * f + w_a * a for f, a in zip(fmt, ans)),
            "tool_calls": statistics.mean(len(t.tool_calls) for t in trajectories),
            "answered": statistics.mean(t.prediction is not None for t in trajectories)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="params/smoke.yaml")
    parser.add_argument("--init", default=None, help="default: the params' SFT checkpoint (dapo.init: sft)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--lr", type=float, default=None, help="default: the params' dapo.learning_rate")
    parser.add_argument("--groups-per-step", type=int, default=2)
    parser.add_argument("--out", default="/tmp/dapo-learning", help="run folder root (checkpoints go there)")
    args = parser.parse_args()
    torch.set_num_threads(2)

    cfg = config.load(args.params)
    init = args.init or init_model_path(cfg)
    qa = load_questions(cfg)[: args.questions]
    cfg.run.output_dir, cfg.run.name = args.out, f"learn-{int(time.time())}"
    cfg.wandb.mode = "disabled"
    d = cfg.dapo
    d.init, d.max_steps, d.save_steps, d.max_questions = init, args.steps, 10 ** 6, args.questions
    d.per_device_train_batch_size = d.num_generations * args.groups_per_step
    if args.lr:
        d.learning_rate = args.lr
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    from wdlib.trajectory import write_jsonl

    write_jsonl(cfg.run_dir / "qa.jsonl", qa)
    print(f"init {init}; {len(qa)} questions; {args.steps} DAPO steps × {args.groups_per_step} groups of "
          f"{d.num_generations}; lr {d.learning_rate}; temperature {d.temperature}; max_turns {d.max_turns}")

    start = time.perf_counter()
    before = evaluate(cfg, init, qa, args.eval_samples, seed=1)
    print(f"before: {before}  ({time.perf_counter() - start:.0f} s)")
    start = time.perf_counter()
    summary = train(cfg, resume=False)
    print(f"trained {summary['global_step']} steps in {time.perf_counter() - start:.0f} s")
    for h in summary["log_history"]:
        if "reward" in h:
            print(f"  step {h['step']:3d}  reward {h['reward']:+.3f}  format {h['rewards/format_reward/mean']:.3f}  "
                  f"answer {h['rewards/answer_reward/mean']:.3f}  kept {h.get('dapo/kept_fraction', float('nan')):.2f}"
                  f"  turns {h.get('rollout/turns', 0):.2f}  tool calls {h.get('rollout/tool_calls', 0):.2f}")
    after = evaluate(cfg, summary["output_dir"], qa, args.eval_samples, seed=1)
    print(f"after:  {after}")
    n = len(qa) * args.eval_samples
    print(f"mean reward over {n} rollouts: total {before['total']:.3f} -> {after['total']:.3f}; format "
          f"{before['format']:.3f} -> {after['format']:.3f}; answer {before['answer']:.3f} -> {after['answer']:.3f} "
          f"after {summary['global_step']} DAPO steps")


if __name__ == "__main__":
    main()

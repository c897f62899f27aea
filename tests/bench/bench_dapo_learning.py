"""Learning signal on CPU: N DAPO steps from a smoke-scale SFT checkpoint raise the mean reward (format part at least).

A 135M model SFT-ed on a few long WebDancer samples alone never emits a well-formed episode: every reward is 0 and
dynamic sampling drops every group. So the policy DAPO starts from must be *sometimes* in format. Default mode:
  1. crawls a little of the local web and writes ~44 template CrawlQA pairs (`wdlib.synthesis.template_qa`);
  2. writes one short scripted demonstration per pair with the real tools (`wdlib.synthesis.demos.scripted_trajectories`),
     except for the --questions pairs DAPO trains and is measured on (held out from SFT);
  3. SFTs the tiny model on them in-process (`wdlib.sft.train`, short max_length);
then rolls out a fixed set of questions (same sampling: DAPO temperature, fixed seed) with the SFT model, runs N DAPO
steps (`wdlib.dapo.train`, params/smoke.yaml's dapo section, run folder under /tmp), rolls out again, and prints the
format / answer / total reward means before and after, plus the per-step training curve.
`--init PATH` skips 1-3 and starts from PATH: `--init outputs/smoke/checkpoints/sft` is the smoke run's SFT
checkpoint (trained on the same kind of demonstrations, `trajectories.format_demos`, plus 4 WebDancer samples).
A 135M model rarely answers right: the format part is the one expected to move.

    .venv/bin/python tests/bench/bench_dapo_learning.py --steps 8 [--sft-steps 16] [--init PATH] [--lr 2e-5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from wdlib import config
from wdlib.aio import run_sync
from wdlib.dapo import AgentRollout, train
from wdlib.react import prompt_messages
from wdlib.llm import TransformersClient
from wdlib.rewards import answer_scores, format_score
from wdlib.tools import Toolbox
from wdlib.trajectory import write_jsonl

CRAWL_ROOT = "https://docs.python.org/3/library/index.html"


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


def local_qa(cfg, n: int, max_pages: int, seed: int):
    """Template CrawlQA over a small crawl of the local Python docs (deterministic)."""
    from wdlib import synthesis

    with Toolbox.from_config(cfg) as toolbox:
        pages = run_sync(synthesis.crawl(toolbox.fetch, [CRAWL_ROOT], max_depth=1, max_pages=max_pages,
                                         progress=False)).pages
    return synthesis.template_qa(pages, n, seed=seed)


def scripted_sft(cfg, qa, steps: int, lr: float, max_length: int, visit: float) -> str:
    """Scripted demonstrations of `qa` → in-process SFT of models.policy; returns the checkpoint path."""
    from wdlib import sft
    from wdlib.react import check_format
    from wdlib.synthesis import demos

    with Toolbox.from_config(cfg) as toolbox:
        episodes = run_sync(demos.scripted_trajectories(qa, toolbox, visit=visit, seed=cfg.run.seed))
    bad = [problem for t in episodes if (problem := check_format(t.messages))]
    assert not bad, bad[:3]
    write_jsonl(cfg.run_dir / "scripted_demos.jsonl", episodes)
    s = cfg.sft
    s.init, s.include_external, s.max_examples, s.resume = None, False, None, False
    s.max_steps, s.learning_rate, s.max_length, s.save_steps, s.warmup_ratio = steps, lr, max_length, 10 ** 6, 0.0
    conversations = [sft.to_conversation(t) for t in episodes]
    start = time.perf_counter()
    result = sft.train(cfg, conversations)
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    print(f"SFT: {sum(len(t.tool_calls) for t in episodes)} tool calls in {len(episodes)} scripted demos; "
          f"{sft.format_stats(result.data)}")
    print(f"SFT: {steps} steps in {time.perf_counter() - start:.0f} s; loss {losses[0]:.3f} -> "
          f"{statistics.mean(losses[-5:]):.3f} (mean of last 5)")
    return str(result.checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="params/smoke.yaml")
    parser.add_argument("--init", default=None, help="start DAPO from this checkpoint (skips the scripted SFT)")
    parser.add_argument("--steps", type=int, default=8, help="DAPO steps")
    parser.add_argument("--qa", type=int, default=44,
                        help="template QA pairs: the first --questions for DAPO and the before/after rollouts, the "
                             "rest for the scripted SFT demos")
    parser.add_argument("--crawl-pages", type=int, default=60)
    parser.add_argument("--sft-steps", type=int, default=16)
    parser.add_argument("--sft-lr", type=float, default=2e-4)
    parser.add_argument("--sft-max-length", type=int, default=1280)
    parser.add_argument("--visit", type=float, default=0.3, help="fraction of scripted demos that also visit a page")
    parser.add_argument("--top-k", type=int, default=3, help="search results per query (demos and rollouts alike)")
    parser.add_argument("--questions", type=int, default=8, help="questions rolled out for the before/after means")
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--lr", type=float, default=None, help="DAPO lr; default: the params' dapo.learning_rate")
    parser.add_argument("--groups-per-step", type=int, default=2)
    parser.add_argument("--out", default="/tmp/dapo-learning", help="run folder root (checkpoints go there)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()

    cfg = config.load(args.params)
    cfg.run.output_dir, cfg.run.name = args.out, f"learn-{int(time.time())}"
    cfg.wandb.mode = "disabled"
    # Short observations for demos and rollouts alike: the smoke web's 10-result search is ~650 tokens.
    cfg.web.top_k = args.top_k
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    qa = local_qa(cfg, args.qa, args.crawl_pages, cfg.run.seed)
    print(f"{len(qa)} template QA pairs from {args.crawl_pages} crawled pages "
          f"({', '.join(f'{t}: {sum(q.type == t for q in qa)}' for t in sorted({q.type for q in qa}))})")
    if args.init:
        init = args.init
    else:
        # demonstrations only for the questions DAPO does not train on: a rise in answer reward is then not recall
        init = scripted_sft(cfg, qa[args.questions:], args.sft_steps, args.sft_lr, args.sft_max_length, args.visit)
    # DAPO trains on the evaluation questions: the bench measures whether RL raises the reward it optimizes.
    eval_qa = qa[: args.questions]
    d = cfg.dapo
    d.init, d.max_steps, d.save_steps, d.max_questions = init, args.steps, 10 ** 6, args.questions
    d.per_device_train_batch_size = d.num_generations * args.groups_per_step
    d.gradient_checkpointing = True  # 8 rollouts of ~1,900 tokens without it exceed 24 GB (killed by the OOM killer)
    if args.lr:
        d.learning_rate = args.lr
    write_jsonl(cfg.run_dir / "qa.jsonl", eval_qa)
    print(f"init {init}; {len(eval_qa)} questions; {args.steps} DAPO steps × {args.groups_per_step} groups of "
          f"{d.num_generations}; lr {d.learning_rate}; temperature {d.temperature}; max_turns {d.max_turns}; "
          f"{d.max_new_tokens_per_turn} tokens per turn; search top_k {cfg.web.top_k}")

    start = time.perf_counter()
    before = evaluate(cfg, init, eval_qa, args.eval_samples, seed=1)
    print(f"before: {before}  ({time.perf_counter() - start:.0f} s)")
    start = time.perf_counter()
    summary = train(cfg, resume=False)
    print(f"trained {summary['global_step']} steps in {time.perf_counter() - start:.0f} s")
    for h in summary["log_history"]:
        if "reward" in h:
            print(f"  step {h['step']:3d}  reward {h['reward']:+.3f}  format {h['rewards/format_reward/mean']:.3f}  "
                  f"answer {h['rewards/answer_reward/mean']:.3f}  kept {h.get('dapo/kept_fraction', float('nan')):.2f}"
                  f"  turns {h.get('rollout/turns', 0):.2f}  tool calls {h.get('rollout/tool_calls', 0):.2f}")
    after = evaluate(cfg, summary["output_dir"], eval_qa, args.eval_samples, seed=1)
    print(f"after:  {after}")
    n = len(eval_qa) * args.eval_samples
    print(f"mean reward over {n} rollouts: total {before['total']:.3f} -> {after['total']:.3f}; format "
          f"{before['format']:.3f} -> {after['format']:.3f}; answer {before['answer']:.3f} -> {after['answer']:.3f} "
          f"after {summary['global_step']} DAPO steps  (whole bench {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()

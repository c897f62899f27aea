"""DAPO training: TRL's GRPOTrainer with the DAPO pieces it lacks, each one hook or one reward function.

What the paper describes (WebDancer §3.4, after DAPO): group rollouts of the ReAct agent, clip-higher (ε 0.2/0.28),
token-level loss, no KL, dynamic sampling, overlong reward shaping, observation tokens masked from the loss,
R = 0.1·format + 0.9·answer. How it maps onto TRL 1.15:

- `GRPOConfig(loss_type="dapo", epsilon, epsilon_high, beta=0, mask_truncated_completions)` gives the loss
  (`grpo_config`; `dapo.trainer_kwargs` passes any other GRPOConfig argument through).
- `wdlib.dapo.rollout.AgentRollout` is the trainer's `rollout_func` (multi-turn rollouts, observations masked).
- `DAPOTrainer` overrides one hook, `_generate_and_score_completions`, for dynamic sampling: groups whose answers
  are all right or all wrong (DAPO's accuracy rule; `dapo.dynamic_sampling_by: reward` drops only groups whose total
  rewards are equal) are dropped and more prompts are rolled out, at most `dapo.max_refills` times;
  `dapo.oversample_groups` more prompts go out with each step's own, in the same generation call. It reads the
  answer rewards by keeping what `_calculate_rewards` returns. The completions log (`log_completions`: the
  `completions/*.parquet` of the trainer folder) holds every rollout of the step, refills included, with a `trained`
  column; TRL's own keeps only the last generation call and shows advantages of groups that were dropped.
- `overlong_penalty` is DAPO's soft length punishment counted on model tokens only (TRL's own
  `get_soft_overlong_punishment` would count tool responses too).

`run(cfg)` trains in-process, or, when `dapo.num_processes` > 1, re-launches this stage under `accelerate launch`
(`python -m wdlib.dapo --params FILE`), as SFT does.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer

from wdlib import models, params
from wdlib.config import Config
from wdlib.dapo.rollout import AgentRollout, load_questions, policy_client, prompt_dataset
from wdlib.launch import finished, run_stage, trainer_args
from wdlib.rewards import reward_weights, trl_reward_funcs
from wdlib.tools import Toolbox
from wdlib.tracking import init_wandb, report_to
from wdlib.trajectory import QAPair

log = logging.getLogger(__name__)
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is "experimental" in TRL 1.15; we rely on it


def init_model_path(cfg: Config) -> str:
    """`dapo.init`: "sft" (or "sft-rs", after the rejection round) → the run's SFT checkpoint (falling back to
    models.policy when it is missing), else a model name/path; None → models.policy."""
    init = cfg.dapo.init
    if init is None:
        return models.resolve(cfg.models.policy.name)
    if init not in ("sft", "sft-rs"):
        return models.resolve(init)
    sft_dir = cfg.paths.checkpoint_dir(init)
    if (sft_dir / "config.json").is_file():
        return str(sft_dir)
    print(f"[dapo] no SFT checkpoint at {sft_dir} (run notebook 03 first): starting from models.policy "
          f"({cfg.models.policy.name}); an untrained small model rarely calls tools")
    return models.resolve(cfg.models.policy.name)



# ------------------------------------------------------------------ overlong shaping
def overlong_penalty(env_mask: list[int], max_model_tokens: int, buffer: int) -> float:
    """DAPO's soft overlong punishment over MODEL tokens (env_mask == 1): 0 up to max - buffer, then linear down
    to -1 at max, -1 beyond. Observation tokens do not count."""
    length = sum(1 for m in env_mask if m)
    if buffer <= 0:
        return -1.0 if length > max_model_tokens else 0.0
    if length <= max_model_tokens - buffer:
        return 0.0
    if length <= max_model_tokens:
        return (max_model_tokens - buffer - length) / buffer
    return -1.0


def make_overlong_reward(cfg: Config) -> Callable:
    """TRL reward function (weight 1) reading the per-sample `model_tokens` count the rollout returns."""
    limit, buffer = cfg.dapo.overlong_max_model_tokens, cfg.dapo.overlong_buffer

    def overlong_reward(prompts: list, completions: list, model_tokens: list[int], **kwargs: Any) -> list[float]:
        return [overlong_penalty([1] * n, limit, buffer) for n in model_tokens]

    return overlong_reward



# ------------------------------------------------------------------ dynamic sampling
def informative_groups(values: torch.Tensor, num_generations: int, tol: float = 1e-6) -> torch.Tensor:
    """Bool per group: True when its values (the advantages, or one reward per rollout such as answer right = 1)
    are not all equal. A group whose rewards are all equal has advantages (r - mean)/(std + eps) = 0 up to rounding."""
    grouped = values.view(-1, num_generations)
    return (grouped.amax(dim=1) - grouped.amin(dim=1)) > tol


_LEFT_PADDED = ("prompt_ids", "prompt_mask")


def select_rows(batch: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """The rows `rows` (index tensor) of a generation batch; scalars (num_items_in_batch) are kept as they are."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            out[key] = value[rows.to(value.device)]
        elif isinstance(value, list):
            out[key] = [value[i] for i in rows.tolist()]
        else:
            out[key] = value
    return out


def merge_batches(batches: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Concatenate generation batches row-wise, re-padding prompts on the left and completions on the right."""
    if len(batches) == 1:
        return dict(batches[0])
    merged = {}
    for key in batches[0]:
        values = [b.get(key) for b in batches]
        if any(v is None for v in values):
            if not all(v is None for v in values):
                raise ValueError(f"cannot merge generation batches: {key!r} is missing from some of them")
            merged[key] = None
        elif isinstance(values[0], torch.Tensor) and values[0].ndim == 0:
            merged[key] = values[0]  # recomputed by the caller (num_items_in_batch)
        elif isinstance(values[0], torch.Tensor) and values[0].ndim == 1:
            merged[key] = torch.cat(values)
        elif isinstance(values[0], torch.Tensor) and values[0].ndim == 2:
            width = max(v.shape[1] for v in values)
            fill = pad_token_id if key.endswith("_ids") else (1 if key == "tool_mask" else 0)
            left = key in _LEFT_PADDED
            padded = []
            for v in values:
                extra = v.new_full((v.shape[0], width - v.shape[1]), fill)
                padded.append(torch.cat([extra, v] if left else [v, extra], dim=1))
            merged[key] = torch.cat(padded)
        elif isinstance(values[0], list):
            merged[key] = [x for v in values for x in v]
        else:
            raise ValueError(f"cannot merge generation batches: unsupported field {key!r} ({type(values[0])})")
    return merged


class DAPOTrainer(GRPOTrainer):
    """GRPOTrainer + DAPO's dynamic sampling (one hook) and rollout/train timing.

    `accuracy_reward` names the reward function that scores the answer: a group is kept only if that reward differs
    inside it (DAPO's rule). None: kept if the total reward differs."""

    def __init__(self, *args, dynamic_sampling: bool = True, max_refills: int = 3, oversample_groups: int = 0,
                 accuracy_reward: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.dynamic_sampling = dynamic_sampling
        self.max_refills = max_refills
        self.oversample_groups = oversample_groups
        if accuracy_reward is not None and accuracy_reward not in self.reward_func_names:
            raise ValueError(f"accuracy_reward={accuracy_reward!r} is not one of the reward functions "
                             f"{self.reward_func_names}")
        self.accuracy_column = None if accuracy_reward is None else self.reward_func_names.index(accuracy_reward)
        self._rewards_per_func: torch.Tensor | None = None
        self._refill_rng = random.Random(self.args.seed + self.accelerator.process_index)
        self._refill_order: list[int] = []
        self._rollout_s = 0.0
        if dynamic_sampling:  # room for the refills' rollouts in the completions log
            size = (self.args.generation_batch_size + oversample_groups * self.num_generations) * (max_refills + 1)
            self._logs = {key: defaultdict(lambda: deque(maxlen=size)) if isinstance(value, defaultdict)
                          else deque(maxlen=size) for key, value in self._logs.items()}

    # -- timing: rollout happens inside training_step (in _prepare_inputs), so split it out
    def training_step(self, model, inputs, num_items_in_batch):
        self._rollout_s = 0.0
        start = time.perf_counter()
        out = super().training_step(model, inputs, num_items_in_batch)
        self._metrics["train"]["time/train_s"].append(time.perf_counter() - start - self._rollout_s)
        return out

    def _generate_and_score_completions(self, inputs):
        start = time.perf_counter()
        sampling = self.model.training and self.dynamic_sampling
        if sampling:  # the completions log shows this step's rollouts only
            for value in self._logs.values():
                value.clear()
        want = len(inputs) // self.num_generations  # groups this process trains on per step
        if sampling and self.oversample_groups:
            inputs = list(inputs) + self._refill_inputs(self.oversample_groups)
        batch = super()._generate_and_score_completions(inputs)
        if sampling:
            batch = self._dynamic_sampling(inputs, batch, want)
        self._rollout_s += time.perf_counter() - start
        self._metrics["train" if self.model.training else "eval"]["time/rollout_s"].append(
            time.perf_counter() - start)
        return batch

    # -- dynamic sampling
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # Kept for `_informative`: TRL's batch holds the advantages, not the reward of each function.
        self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._rewards_per_func

    def _informative(self, batch: dict[str, Any]) -> torch.Tensor:
        """Bool per local group of the batch just scored: rewards differ, and (with an accuracy reward) answers do."""
        keep = informative_groups(batch["advantages"], self.num_generations)
        if self.accuracy_column is None:
            return keep
        n = batch["advantages"].numel()
        start = self.accelerator.process_index * n
        scores = self._rewards_per_func[start:start + n, self.accuracy_column].nan_to_num(0.0)
        return keep & informative_groups(scores, self.num_generations).to(keep.device)

    def _global_sum(self, value: int) -> int:
        return int(self.accelerator.gather(torch.tensor([value], device=self.accelerator.device)).sum().item())

    def _refill_inputs(self, num_groups: int) -> list[dict]:
        """`num_groups` fresh prompts from the training set, each repeated num_generations times."""
        rows = []
        for _ in range(num_groups):
            if not self._refill_order:
                self._refill_order = list(range(len(self.train_dataset)))
                self._refill_rng.shuffle(self._refill_order)
            row = self.train_dataset[self._refill_order.pop()]
            rows.extend(dict(row) for _ in range(self.num_generations))
        return rows

    def _dynamic_sampling(self, inputs: list[dict], batch: dict[str, Any], want: int) -> dict[str, Any]:
        """The first `want` informative groups of `batch` (rolled out from `inputs`, oversampled groups included)
        and of refills while fewer were found."""
        G = self.num_generations
        if len(inputs) % G:
            raise ValueError(f"dynamic sampling needs whole groups on each process: {len(inputs)} samples for "
                             f"num_generations={G}; make per_device_train_batch_size × gradient_accumulation_steps "
                             "a multiple of num_generations")
        keep = self._informative(batch)
        keeps = [keep]
        kept = [self._groups(batch, keep)] if keep.any() else []
        n_kept, generated, refills = int(keep.sum()), len(keep), 0
        while self._global_sum(n_kept) < self._global_sum(want) and refills < self.max_refills:
            # Every process rolls out the same number of groups: TRL's reward step gathers across processes.
            missing = self._global_sum(max(0, want - n_kept))
            more_inputs = self._refill_inputs(math.ceil(missing / self.accelerator.num_processes))
            more = super()._generate_and_score_completions(more_inputs)
            more_keep = self._informative(more)
            keeps.append(more_keep)
            if more_keep.any():
                kept.append(self._groups(more, more_keep))
            n_kept, generated, refills = n_kept + int(more_keep.sum()), generated + len(more_keep), refills + 1

        metrics = self._metrics["train"]
        total_kept, total_generated = self._global_sum(n_kept), self._global_sum(generated)
        metrics["dapo/kept_groups"].append(total_kept)
        metrics["dapo/dropped_groups"].append(total_generated - total_kept)
        metrics["dapo/kept_fraction"].append(total_kept / max(1, total_generated))
        metrics["dapo/refills"].append(refills)
        self._log_trained(keeps, want if total_kept else 0)
        if total_kept == 0:
            # Nothing informative even after the refills: train on the original batch with its advantages zeroed
            # (under the accuracy rule they may hold format-only differences), rather than loop forever.
            log.info("dynamic sampling: no informative group after %d refills; the original batch, advantages 0",
                     refills)
            metrics["dapo/no_informative_group"].append(1.0)
            metrics["dapo/groups_used"].append(self._global_sum(want))
            batch = select_rows(batch, torch.arange(want * G))  # the step's own groups, not the oversampled
            return self._count_items({**batch, "advantages": torch.zeros_like(batch["advantages"])})
        metrics["dapo/no_informative_group"].append(0.0)

        merged = merge_batches(kept, self._tokenizer.pad_token_id) if kept else None
        if merged is not None and merged["advantages"].numel() > want * G:  # more than needed: keep the first
            merged = select_rows(merged, torch.arange(want * G))
        metrics["dapo/groups_used"].append(self._global_sum(0 if merged is None else merged["advantages"].numel() // G))
        return self._count_items(self._pad_for_split(merged, batch))

    def _count_items(self, batch: dict[str, Any]) -> dict[str, Any]:
        """`num_items_in_batch` (the loss's normalizer) recounted for the rows the step trains on."""
        mask = batch["completion_mask"]
        if batch.get("tool_mask") is not None:
            mask = mask * batch["tool_mask"]
        batch["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
        return batch

    def _log_trained(self, keeps: list[torch.Tensor], want: int) -> None:
        """The `trained` column of the completions log, one entry per rollout of each generation call in order: the
        first `want` kept groups are trained on (as in `_dynamic_sampling`), the rest of the rollouts are not."""
        for keep in keeps:
            flags = []
            for informative in keep.tolist():
                trained = informative and want > 0
                want -= trained
                flags.extend([trained] * self.num_generations)
            self._logs["extra"]["trained"].extend(gather_object(flags))

    def _groups(self, batch: dict[str, Any], keep: torch.Tensor) -> dict[str, Any]:
        rows = torch.arange(len(keep) * self.num_generations).view(-1, self.num_generations)[keep.cpu()].flatten()
        return select_rows(batch, rows)

    def _pad_for_split(self, merged: dict[str, Any] | None, original: dict[str, Any]) -> dict[str, Any]:
        """TRL splits a generation batch into `steps_per_generation` equal parts: add rows that take no part in the
        loss (completion mask zeroed, advantage 0) until the row count divides, or when this process kept nothing."""
        steps = self.args.steps_per_generation
        n = 0 if merged is None else merged["advantages"].numel()
        short = steps if n == 0 else (-n) % steps
        if short == 0:
            return merged
        filler = select_rows(original, torch.arange(short) % original["advantages"].numel())
        filler["completion_mask"] = torch.zeros_like(filler["completion_mask"])
        filler["advantages"] = torch.zeros_like(filler["advantages"])
        return filler if merged is None else merge_batches([merged, filler], self._tokenizer.pad_token_id)


# ------------------------------------------------------------------ assembling the trainer
def grpo_config(cfg: Config, output_dir: Path | None = None):
    from trl import GRPOConfig

    d = cfg.dapo
    on_gpu = models.pick_device(cfg.run.device).startswith("cuda")
    weights = reward_weights(cfg) + ([1.0] if d.overlong_buffer > 0 else [])
    return trainer_args(
        cfg, "dapo", GRPOConfig,
        output_dir=str(output_dir or cfg.paths.trainer_dir("dapo")),
        loss_type=d.loss_type,
        epsilon=d.epsilon,
        epsilon_high=d.epsilon_high,
        beta=d.beta,
        mask_truncated_completions=d.mask_truncated_completions,
        temperature=d.temperature,
        top_p=d.top_p,
        num_generations=d.num_generations,
        max_completion_length=d.max_completion_length,
        per_device_train_batch_size=d.per_device_train_batch_size,
        gradient_accumulation_steps=d.gradient_accumulation_steps,
        learning_rate=d.learning_rate,
        max_steps=d.max_steps,
        save_steps=d.save_steps,
        save_total_limit=d.save_total_limit,
        logging_steps=d.logging_steps,
        gradient_checkpointing=d.gradient_checkpointing,
        reward_weights=weights,
        disable_dropout=True,
        use_vllm=d.use_vllm and on_gpu,
        vllm_mode=d.vllm_mode,
        vllm_gpu_memory_utilization=cfg.models.policy.gpu_memory_utilization,
        vllm_tensor_parallel_size=cfg.models.policy.tensor_parallel_size,
        vllm_max_model_length=cfg.models.policy.context_length,
        use_cpu=not on_gpu,
        bf16=on_gpu,
        report_to=report_to(cfg),
        run_name=f"{cfg.run.name}-dapo",
        seed=cfg.run.seed,
        log_completions=True,
        num_completions_to_print=0,
        save_only_model=False,
        dataloader_num_workers=0,
    )


def reward_funcs(cfg: Config, judge_client: Any = None) -> list[Callable]:
    """[format, answer(, overlong)]: weights come from `grpo_config` (0.1, 0.9, 1)."""
    funcs = trl_reward_funcs(cfg, judge_client)
    if cfg.dapo.overlong_buffer > 0:
        funcs.append(make_overlong_reward(cfg))
    return funcs


def build_trainer(cfg: Config, toolbox: Any, *, qa: list[QAPair] | None = None, judge_client: Any = None,
                  model: str | Any | None = None, output_dir: Path | None = None,
                  client_factory: Callable = policy_client) -> DAPOTrainer:
    from wdlib.trl_compat import install

    install()  # CPU: TRL 1.15's fused log-prob kernel needs Triton; delete with the TRL ≥1.16 pin move
    qa = load_questions(cfg) if qa is None else qa
    if not qa:
        raise ValueError("no training questions for DAPO")
    model = model or init_model_path(cfg)
    tokenizer = models.load_tokenizer(model if isinstance(model, str) else model.name_or_path)
    args = grpo_config(cfg, output_dir)
    if isinstance(model, str):  # on CPU the optimizer keeps fp32 weights (bf16 only as autocast / rollout copy)
        args.model_init_kwargs = {"dtype": models.torch_dtype("float32" if args.use_cpu else cfg.models.policy.dtype,
                                                              "cpu" if args.use_cpu else "cuda")}
    rollout = AgentRollout(cfg, toolbox, qa, client_factory)
    trainer = DAPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=reward_funcs(cfg, judge_client),
        args=args,
        train_dataset=prompt_dataset(qa, rollout.prompt),
        rollout_func=rollout,
        dynamic_sampling=cfg.dapo.dynamic_sampling,
        max_refills=cfg.dapo.max_refills,
        oversample_groups=cfg.dapo.oversample_groups,
        accuracy_reward="answer_reward" if cfg.dapo.dynamic_sampling_by == "accuracy" else None,
    )
    trainer.agent_rollout = rollout
    trainer.init_model = model if isinstance(model, str) else getattr(model, "name_or_path", "")
    return trainer


def _judge_client(cfg: Config):
    if cfg.judge.mode != "llm" or cfg.models.judge is None:
        return None
    from wdlib.llm import make_client

    return make_client(cfg.models.judge)



def train(cfg: Config, resume: bool = True) -> dict[str, Any]:
    """Run DAPO per params; resumes from the last `checkpoint-N` in the trainer folder. Saves the final model +
    tokenizer in `cfg.paths.checkpoint_dir("dapo")` and a summary (log history: reward, kept fraction, ... per step)
    beside it."""
    from transformers.trainer_utils import get_last_checkpoint

    torch.manual_seed(cfg.run.seed)
    work_dir, out_dir = cfg.paths.trainer_dir("dapo"), cfg.paths.checkpoint_dir("dapo")
    work_dir.mkdir(parents=True, exist_ok=True)
    last = get_last_checkpoint(str(work_dir)) if resume else None
    if finished("dapo", last, cfg.dapo.max_steps, cfg.paths.summary_path("dapo")):
        return load_result(cfg)
    main_process = int(os.environ.get("RANK", "0")) == 0
    wandb_run = init_wandb(cfg, "dapo") if cfg.wandb.mode != "disabled" and main_process else None
    try:
        with Toolbox.from_config(cfg) as toolbox:
            trainer = build_trainer(cfg, toolbox, judge_client=_judge_client(cfg), output_dir=work_dir)
            if main_process:
                trainer.agent_rollout.log_path = cfg.paths.dapo_rollouts
            if last:
                print(f"[dapo] resuming from {last}")
            result = trainer.train(resume_from_checkpoint=last)
            trainer.save_model(str(out_dir))
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    summary = {"output_dir": str(out_dir), "global_step": result.global_step, "resumed_from": last,
               "init_model": trainer.init_model,
               "log_history": trainer.state.log_history}
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(out_dir))
        cfg.paths.summary_path("dapo").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def load_result(cfg: Config) -> dict[str, Any]:
    """The summary of a finished run, read back from the run folder (after a subprocess launch)."""
    return json.loads(cfg.paths.summary_path("dapo").read_text())


def run(cfg: Config) -> dict[str, Any]:
    """In-process when one process is configured; else `accelerate launch` this stage as a subprocess."""
    return run_stage(cfg, "dapo", train, load_result)


def main(argv: list[str] | None = None) -> None:
    """`accelerate launch -m wdlib.dapo --params params/7b.yaml` (multi-GPU) or `python -m wdlib.dapo --params ...`."""
    parser = argparse.ArgumentParser(description="DAPO: multi-turn agentic RL (WebDancer)")
    parser.add_argument("--params", required=True, help="params YAML (e.g. params/7b.yaml)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    args = parser.parse_args(argv)
    summary = train(params.load(args.params), resume=not args.no_resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[dapo] done: {summary['global_step']} steps, model in {summary['output_dir']}")

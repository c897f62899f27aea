"""SFT training: TRL `SFTTrainer` on the pre-tokenized conversations of `wdlib.sft.data`, full fine-tune or LoRA
(peft), `backend: hf | unsloth` (unsloth only on a CUDA GPU), bf16 on GPU, fp32 + `use_cpu` on CPU, resume from the
latest checkpoint in the run folder. The final model + tokenizer go to `cfg.paths.checkpoint_dir("sft")`, which the
DAPO and evaluation stages load (`sft.checkpoint` names another folder: the rejection round's second pass writes
`sft-rs`). Multi-GPU: `run(cfg)` re-launches this stage under `accelerate launch`
(`python -m wdlib.sft --params FILE`).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wdlib import models, params, tracking
from wdlib.config import Config
from wdlib.launch import finished, run_stage, trainer_args
from wdlib.sft.data import NoSFTData, build_dataset, format_stats, load_conversations

# ---------------------------------------------------------------- model and trainer
def prepare_backend(cfg: Config) -> None:
    """Import unsloth first when it is the backend (it patches transformers/TRL on import); clear error on CPU."""
    if cfg.sft.backend != "unsloth":
        return
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("sft.backend: unsloth needs a CUDA GPU (none here); use sft.backend: hf on CPU")
    import unsloth  # noqa: F401  (guarded: never imported on CPU)


def _init_name(cfg: Config) -> str:
    return cfg.sft.init or cfg.models.policy.name


def load_model_and_tokenizer(cfg: Config, device: str):
    """(model, tokenizer, peft_config) for the configured backend: hf gives the model as a path for SFTTrainer to
    load, and a peft LoraConfig with `sft.lora`; unsloth gives its loaded (and LoRA-wrapped) model."""
    s = cfg.sft
    if s.backend == "unsloth":
        prepare_backend(cfg)
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=models.resolve(_init_name(cfg)), max_seq_length=s.max_length, dtype=None,
            load_in_4bit=False, full_finetuning=not s.lora)
        if s.lora:
            model = FastLanguageModel.get_peft_model(
                model, r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=0.0,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                use_gradient_checkpointing="unsloth" if s.gradient_checkpointing else False,
                random_state=cfg.run.seed)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer, None

    tokenizer = models.load_tokenizer(_init_name(cfg))
    # A path, not a loaded model: SFTTrainer creates the model itself after the accelerate/DeepSpeed state exists
    # (ZeRO-3 init, one device per process), in `model_init_kwargs`' dtype (see training_args).
    model = models.resolve(_init_name(cfg))
    peft_config = None
    if s.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=0.05, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    return model, tokenizer, peft_config


def training_args(cfg: Config, device: str, load_model: bool = True):
    """TRL SFTConfig (with `sft.trainer_kwargs` passed through); `load_model`: the trainer loads the model from a
    path (fp32 on CPU, bf16 on GPU)."""
    from trl import SFTConfig

    s = cfg.sft
    on_gpu = device.startswith("cuda")
    dtype = ("bfloat16" if cfg.models.policy.dtype == "auto" else cfg.models.policy.dtype) if on_gpu else "float32"
    return trainer_args(
        cfg, "sft", SFTConfig,
        model_init_kwargs={"dtype": dtype} if load_model else None,
        output_dir=str(cfg.paths.trainer_dir(s.checkpoint)),
        learning_rate=s.learning_rate,
        num_train_epochs=s.num_train_epochs,
        max_steps=s.max_steps,
        per_device_train_batch_size=s.per_device_train_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        warmup_steps=s.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        logging_steps=s.logging_steps,
        save_steps=s.save_steps,
        save_total_limit=s.save_total_limit,
        gradient_checkpointing=s.gradient_checkpointing,
        max_length=s.max_length,  # already enforced by encode(); TRL's own truncation is then a no-op
        packing=s.packing,
        assistant_only_loss=False,  # the mask comes pre-computed in `assistant_masks` (see the module docstring)
        bf16=on_gpu,
        use_cpu=not on_gpu,
        optim="adamw_torch_fused",  # fused AdamW also exists on CPU: ~8x faster per step than the for-loop one
        report_to=tracking.report_to(cfg),
        run_name=f"{cfg.run.name}-{s.checkpoint}",
        seed=cfg.run.seed,
        save_only_model=False,  # keep optimizer state so a resumed run continues exactly
    )


def make_trainer(cfg: Config, dataset, model, tokenizer, peft_config=None, device: str = "cpu"):
    from trl import SFTTrainer

    from wdlib import trl_compat

    trl_compat.install()  # TRL 1.15's SFT loss also goes through the Triton-only fused lm-head (no-op with Triton)
    return SFTTrainer(model=model, args=training_args(cfg, device, load_model=isinstance(model, str)),
                      train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)


def last_checkpoint(cfg: Config) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    out = cfg.paths.trainer_dir(cfg.sft.checkpoint)
    return get_last_checkpoint(str(out)) if out.is_dir() else None


def _save_final(cfg: Config, trainer, tokenizer) -> Path:
    """Save a plain (merged) model + tokenizer that `from_pretrained` loads, plus the trainer state (loss log)."""
    s = cfg.sft
    final = cfg.paths.checkpoint_dir(s.checkpoint)
    if s.lora and s.backend == "unsloth":
        trainer.model.save_pretrained_merged(str(final), tokenizer, save_method="merged_16bit")
    elif s.lora:
        adapter = final.with_name(f"{s.checkpoint}-adapter")
        trainer.save_model(str(adapter))  # gathers shards under ZeRO-3; only the main process writes
        if trainer.accelerator.is_main_process:
            from peft import PeftModel

            base = models.load_model(_init_name(cfg), dtype="bfloat16" if trainer.args.bf16 else "float32",
                                     device="cpu")
            PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().save_pretrained(str(final))
            tokenizer.save_pretrained(str(final))
    else:
        trainer.save_model(str(final))  # model + processing_class (the tokenizer, with its inference template)
    if trainer.accelerator.is_main_process:
        trainer.state.save_to_json(str(final / "trainer_state.json"))
    return final


@dataclass
class SFTResult:
    checkpoint: Path
    data: dict[str, Any]  # build_dataset statistics + sources
    log_history: list[dict[str, Any]]
    metrics: dict[str, Any]


def train(cfg: Config, conversations: list[list[dict[str, str]]] | None = None) -> SFTResult:
    """The whole stage in this process: data → trainer → train (resuming) → final checkpoint + stats."""
    from transformers import set_seed

    name = cfg.sft.checkpoint
    resume = last_checkpoint(cfg) if cfg.sft.resume else None
    final = cfg.paths.checkpoint_dir(name)
    if finished(name, resume, cfg.sft.max_steps, cfg.paths.summary_path(name), final / "trainer_state.json"):
        return load_result(cfg)
    prepare_backend(cfg)
    set_seed(cfg.run.seed)
    device = models.pick_device(cfg.run.device)
    sources = {}
    if conversations is None:
        conversations, sources = load_conversations(cfg)
    model, tokenizer, peft_config = load_model_and_tokenizer(cfg, device)
    dataset, data_stats = build_dataset(conversations, tokenizer, cfg.sft.max_length, cfg.sft.truncation)
    data_stats["sources"] = sources
    if len(dataset) == 0:
        raise NoSFTData(f"all {len(conversations)} conversations were dropped at sft.max_length={cfg.sft.max_length}"
                        " (too long even with observations shortened): raise sft.max_length")
    if cfg.sft.max_examples is not None and len(dataset) > cfg.sft.max_examples:
        dataset = dataset.shuffle(seed=cfg.run.seed).select(range(cfg.sft.max_examples))
    data_stats["examples_used"] = len(dataset)
    main_process = int(os.environ.get("RANK", "0")) == 0
    wandb_run = tracking.init_wandb(cfg, name) if cfg.wandb.mode != "disabled" and main_process else None
    trainer = make_trainer(cfg, dataset, model, tokenizer, peft_config, device)
    if resume:
        print(f"resuming SFT from {resume}")
    out = trainer.train(resume_from_checkpoint=resume)
    final = _save_final(cfg, trainer, tokenizer)
    result = SFTResult(final, data_stats, list(trainer.state.log_history), dict(out.metrics))
    if trainer.accelerator.is_main_process:
        cfg.paths.summary_path(name).write_text(json.dumps({"checkpoint": str(final), "data": data_stats,
                                               "metrics": result.metrics, "resumed_from": resume}, indent=2))
    if wandb_run is not None:
        wandb_run.finish()
    del trainer, model
    if device.startswith("cuda"):  # leave the GPU to the next cell (the sanity check, DAPO's vLLM)
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------- the rejection round's second pass
def second_pass_config(cfg: Config) -> Config:
    """SFT settings for the pass after the rejection round (`wdlib.synthesis.self_samples`): from the first pass's
    checkpoint, on the teacher's trajectories plus the policy's kept samples, for `sft.rejection.num_train_epochs`
    (or `max_steps`), into `checkpoints/sft-rs`."""
    sub = cfg.model_copy(deep=True)
    sub.sft.init = str(cfg.paths.checkpoint_dir("sft"))
    sub.sft.checkpoint, sub.sft.policy_samples = "sft-rs", True
    sub.sft.num_train_epochs, sub.sft.max_steps = cfg.sft.rejection.num_train_epochs, cfg.sft.rejection.max_steps
    return sub


def train_second_pass(cfg: Config) -> SFTResult:
    """The second pass, in-process or under `accelerate launch` (`sft.num_processes` > 1)."""
    return run(second_pass_config(cfg))


# ---------------------------------------------------------------- multi-GPU launch
def load_result(cfg: Config) -> SFTResult:
    """The result of a finished run, read back from the run folder (after a subprocess launch)."""
    final = cfg.paths.checkpoint_dir(cfg.sft.checkpoint)
    stats = json.loads(cfg.paths.summary_path(cfg.sft.checkpoint).read_text())
    state = json.loads((final / "trainer_state.json").read_text())
    return SFTResult(final, stats["data"], state["log_history"], stats["metrics"])


def run(cfg: Config) -> SFTResult:
    """In-process when one process is configured; else `accelerate launch` this stage as a subprocess."""
    return run_stage(cfg, "sft", train, load_result)


# ---------------------------------------------------------------- CLI (what `accelerate launch -m wdlib.sft` runs)
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SFT with observation masking (WebDancer)")
    parser.add_argument("--params", required=True, help="params YAML (e.g. params/7b.yaml)")
    args = parser.parse_args(argv)
    result = train(params.load(args.params))
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_stats(result.data))
        print(f"saved {result.checkpoint}")

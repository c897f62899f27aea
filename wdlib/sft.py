"""SFT: fine-tune the policy on agent trajectories, with tool responses (observations) masked from the loss.

Data path, top to bottom:
  trajectories (ours: `<run_dir>/sft_data.jsonl`; scripted format demonstrations `<run_dir>/format_demos.jsonl` when
  notebook 01 wrote them (CPU smoke scale, `wdlib.demos`); WebDancer's released samples when `sft.include_external`)
  → ChatML conversations (tool responses are *user* turns `<tool_response>…</tool_response>`)
  → `encode()`: the chat template TRL trains with (its Qwen2.5 training template, with `{% generation %}` markers)
    renders and tokenizes each conversation and returns the assistant mask (1 = trained: every assistant token
    including its `<|im_end|>`; 0 = system, question and observations); too-long conversations are fitted to
    `max_length` by shortening observations (latest first), else cut at a turn boundary, else dropped, and counted
  → a pre-tokenized dataset (`input_ids`, `assistant_masks`) that TRL's `SFTTrainer` consumes as is: it turns
    `assistant_masks` into `labels` (-100 where 0) and does no tokenization of its own. So `loss_mask()` (= `encode()`
    unpacked) is exactly what the trainer trains on; tests/test_sft.py checks the trainer's labels against it.

Training: TRL `SFTTrainer`, full fine-tune or LoRA (peft), `backend: hf | unsloth` (unsloth only on a CUDA GPU), bf16
on GPU, fp32 + `use_cpu` on CPU, resume from the latest checkpoint in the run folder. The final model + tokenizer go
to `checkpoint_path(cfg)` = `<run_dir>/checkpoints/sft`, which the DAPO and evaluation stages load.
Multi-GPU: `run(cfg)` re-launches this module under `accelerate launch` (`python -m wdlib.sft --params FILE`).
"""

from __future__ import annotations

import argparse
import copy
import html
import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import models, tracking
from .config import Config, load as load_config
from .demos import format_demos_path
from .trajectory import Trajectory, load_trajectories, load_webdancer

TRUNCATION_MARK = "\n[... observation truncated to fit the training length]"
MIN_OBSERVATION_TOKENS = 64  # a shortened observation keeps at least this many tokens of its head
_RESPONSE_WRAP = re.compile(r"^(\s*<tool_response>\n?)(.*?)(\n?</tool_response>\s*)$", re.S)


class NoSFTData(RuntimeError):
    """There is nothing to train on; the message says where we looked."""


# ---------------------------------------------------------------- paths
def checkpoint_path(cfg: Config) -> Path:
    """Final SFT model + tokenizer: what DAPO (`dapo.init: sft`) and evaluation (`checkpoints: [sft]`) load."""
    return cfg.run_dir / "checkpoints" / "sft"


def trainer_output_dir(cfg: Config) -> Path:
    """Intermediate `checkpoint-N` folders (optimizer state included): what a resumed run continues from."""
    return cfg.run_dir / "checkpoints" / "sft-trainer"


def data_path(cfg: Config) -> Path:
    """Our own filtered trajectories, written by notebook 01."""
    return cfg.run_dir / "sft_data.jsonl"


def stats_path(cfg: Config) -> Path:
    return cfg.run_dir / "sft_stats.json"


# ---------------------------------------------------------------- trajectories → conversations
def to_conversation(traj: Trajectory) -> list[dict[str, str]] | None:
    """ChatML messages to train on, or None when there is no assistant turn to learn from.

    Trailing observations (a run stopped by max_turns right after a tool call) carry no assistant tokens and are
    dropped; a `tool` role (OpenAI style) becomes the user `<tool_response>` turn the ReAct format uses.
    """
    messages = []
    for m in traj.messages:
        role, content = m["role"], m.get("content") or ""
        if role == "tool":
            role = "user"
            if not content.lstrip().startswith("<tool_response>"):
                content = f"<tool_response>\n{content}\n</tool_response>"
        if role not in ("system", "user", "assistant"):
            return None
        messages.append({"role": role, "content": content})
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()
    return messages if any(m["role"] == "assistant" for m in messages) else None


def reprompt(conv: list[dict[str, str]], question: str) -> list[dict[str, str]]:
    """The conversation under the prompts our agent uses at inference (`wdlib.agent.system_prompt/user_prompt`,
    same tool schemas as WebDancer's), so the policy learns the format under the prompt it will be run with. The
    original date line is kept, so the text does not change from day to day."""
    from .agent import system_prompt, user_prompt

    date = re.search(r"Current date:\s*(\S+)", conv[0]["content"]) if conv[0]["role"] == "system" else None
    rest = conv[2:] if conv[0]["role"] == "system" else conv[1:]
    return [{"role": "system", "content": system_prompt(date.group(1) if date else None)},
            {"role": "user", "content": user_prompt(question)}] + rest


def load_conversations(cfg: Config) -> tuple[list[list[dict[str, str]]], dict[str, Any]]:
    """All conversations to train on and a summary of where they came from (and what was skipped, and why)."""
    stats: dict[str, Any] = {"sources": {}, "skipped": Counter(), "messages": []}
    conversations = []

    def add(trajs: list[Trajectory], source: str, rewrite_prompt: bool = False):
        n = 0
        for t in trajs:
            if t.filters.get("kept") is False:  # written but rejected by the filter funnel
                stats["skipped"]["filtered_out"] += 1
                continue
            conv = to_conversation(t)
            if conv is None:
                stats["skipped"]["no_assistant_turn"] += 1
                continue
            if rewrite_prompt:
                conv = reprompt(conv, t.question)
            conversations.append(conv)
            n += 1
        stats["sources"][source] = n

    ours = data_path(cfg)
    if ours.is_file():
        add(load_trajectories(ours), "run")
    else:
        stats["messages"].append(f"no trajectories of this run yet ({ours} missing: run notebook 01 first)")
        stats["sources"]["run"] = 0
    demos = format_demos_path(cfg)
    if demos.is_file():  # scripted format demonstrations (CPU smoke scale, `trajectories.format_demos`)
        add(load_trajectories(demos), "format_demos")
    if cfg.sft.include_external:
        rng = random.Random(cfg.run.seed)
        for p in cfg.trajectories.external:
            path = cfg.resolve_path(p)
            if not path.is_file():
                stats["messages"].append(f"external trajectories not found: {path}")
                continue
            trajs = load_webdancer(path)
            if cfg.sft.max_external is not None and len(trajs) > cfg.sft.max_external:
                trajs = rng.sample(trajs, cfg.sft.max_external)
            add(trajs, f"external:{path.name}", cfg.sft.reprompt_external)
    if not conversations:
        where = [str(ours)] + ([str(cfg.resolve_path(p)) for p in cfg.trajectories.external]
                               if cfg.sft.include_external else [])
        raise NoSFTData(f"no usable SFT trajectories (looked in: {', '.join(where)}; skipped: "
                        f"{dict(stats['skipped']) or 'none'}). Run notebook 01 to produce sft_data.jsonl, or set "
                        f"sft.include_external: true with trajectories.external pointing at WebDancer's samples.")
    stats["skipped"] = dict(stats["skipped"])
    return conversations, stats


# ---------------------------------------------------------------- tokenization and the loss mask
_TEMPLATES: dict[str, str] = {}


def training_chat_template(tokenizer) -> str:
    """The template SFTTrainer would train with: the tokenizer's own if it has `{% generation %}` markers, else TRL's
    training variant of it (for the Qwen2.5 template: `qwen2_5_training.jinja`). Same decision as SFTTrainer.__init__."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if template not in _TEMPLATES:
        patched = None if has_generation_markers(template) else get_training_chat_template(tokenizer)
        _TEMPLATES[template] = patched or template
    return _TEMPLATES[template]


def _tokenize(messages, tokenizer) -> tuple[list[int], list[int]]:
    # The call TRL's SFT tokenize_fn makes for a conversational example with assistant_only_loss.
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        chat_template=training_chat_template(tokenizer),
                                        return_assistant_tokens_mask=True)
    return list(out["input_ids"]), list(out["assistant_masks"])


@dataclass
class Encoded:
    input_ids: list[int]
    mask: list[int]  # 1 = the loss is taken on this token
    status: str  # full | truncated (observations shortened) | cut (later turns removed) | dropped
    tokens_removed: int = 0  # against the untruncated conversation
    messages: list[dict[str, str]] = field(default_factory=list)  # the conversation as trained (after fitting)


def _is_observation(messages, i) -> bool:
    return i >= 2 and messages[i]["role"] == "user"  # users after the question are tool responses


def _shorten(content: str, tokenizer, keep: int) -> str:
    wrap = _RESPONSE_WRAP.match(content)
    head, body, tail = wrap.groups() if wrap else ("", content, "")
    body_ids = tokenizer.encode(body, add_special_tokens=False)
    return head + tokenizer.decode(body_ids[:keep]) + TRUNCATION_MARK + tail


def _fit_observations(messages, tokenizer, max_length: int):
    """Shorten observations from the last one backwards until the conversation fits; None if it cannot."""
    ids, mask = _tokenize(messages, tokenizer)
    fitted = copy.deepcopy(messages)
    for i in reversed([i for i in range(len(fitted)) if _is_observation(fitted, i)]):
        if len(ids) <= max_length:
            break
        original = fitted[i]["content"]
        wrap = _RESPONSE_WRAP.match(original)
        keep = len(tokenizer.encode(wrap.group(2) if wrap else original, add_special_tokens=False))
        # Token boundaries shift a little when text is cut and re-tokenized: a few passes converge.
        while len(ids) > max_length and keep > MIN_OBSERVATION_TOKENS:
            keep = max(MIN_OBSERVATION_TOKENS, keep - (len(ids) - max_length) - 16)
            fitted[i]["content"] = _shorten(original, tokenizer, keep)
            ids, mask = _tokenize(fitted, tokenizer)
    return (ids, mask, fitted) if len(ids) <= max_length else None


def encode(messages: list[dict[str, str]], tokenizer, max_length: int | None = None,
           truncation: str = "observation") -> Encoded:
    """Tokens and loss mask of one conversation, fitted to `max_length`.

    Over `max_length` with `truncation="observation"`: shorten observations from the end of the last one backwards
    (each keeps its first MIN_OBSERVATION_TOKENS tokens and a visible truncation note), so the final answer stays
    ("truncated"); if that is not enough, end the conversation after the latest assistant turn for which it is
    ("cut": the answer is lost); if not even the first assistant turn fits, drop it. `truncation="drop"` drops
    anything too long.
    """
    ids, mask = _tokenize(messages, tokenizer)
    full_len = len(ids)
    if max_length is None or full_len <= max_length:
        return Encoded(ids, mask, "full", 0, messages)
    if truncation == "drop":
        return Encoded([], [], "dropped", full_len, messages)
    if truncation != "observation":
        raise ValueError(f"sft.truncation: unknown mode {truncation!r} (observation | drop)")
    ends = [j for j in range(len(messages)) if messages[j]["role"] == "assistant"]
    for end in reversed(ends):
        fit = _fit_observations(messages[:end + 1], tokenizer, max_length)
        if fit is not None:
            ids, mask, fitted = fit
            status = "truncated" if end == len(messages) - 1 else "cut"
            return Encoded(ids, mask, status, full_len - len(ids), fitted)
    return Encoded([], [], "dropped", full_len, messages)


def loss_mask(messages: list[dict[str, str]], tokenizer, max_length: int | None = None,
              truncation: str = "observation") -> tuple[list[int], list[int]]:
    """(input_ids, mask) exactly as the trainer sees them; ([], []) for a conversation that is dropped."""
    enc = encode(messages, tokenizer, max_length, truncation)
    return enc.input_ids, enc.mask


def build_dataset(conversations: list[list[dict[str, str]]], tokenizer, max_length: int | None,
                  truncation: str = "observation"):
    """Pre-tokenized `datasets.Dataset` (input_ids, assistant_masks) for SFTTrainer, and the fitting statistics."""
    from datasets import Dataset
    from tqdm.auto import tqdm

    rows = {"input_ids": [], "assistant_masks": []}
    status = Counter()
    removed = trained = total = 0
    lengths = []
    for conv in tqdm(conversations, desc="tokenizing SFT data", leave=False):
        enc = encode(conv, tokenizer, max_length, truncation)
        status[enc.status] += 1
        removed += enc.tokens_removed
        if enc.status == "dropped":
            continue
        if 1 not in enc.mask:  # cannot happen with a template that marks assistant turns; never train on nothing
            status["no_trained_tokens"] += 1
            continue
        rows["input_ids"].append(enc.input_ids)
        rows["assistant_masks"].append(enc.mask)
        lengths.append(len(enc.input_ids))
        trained += sum(enc.mask)
        total += len(enc.mask)
    stats = {
        "conversations": len(conversations),
        "examples": len(lengths),
        "full": status["full"],
        "truncated": status["truncated"],  # observations shortened, final answer kept
        "cut": status["cut"],  # later turns removed, final answer lost
        "dropped": status["dropped"] + status["no_trained_tokens"],
        "tokens_removed": removed,
        "tokens": total,
        "trained_tokens": trained,
        "trained_fraction": round(trained / total, 4) if total else 0.0,
        "max_length": max_length,
        "mean_length": round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
    }
    return Dataset.from_dict(rows), stats


def format_stats(stats: dict[str, Any]) -> str:
    return (f"{stats['conversations']} conversations → {stats['examples']} training examples "
            f"(max_length {stats['max_length']}): {stats['full']} whole, {stats['truncated']} with observations "
            f"shortened, {stats['cut']} cut before the final answer, {stats['dropped']} dropped; "
            f"{stats['tokens_removed']} tokens removed; {stats['trained_tokens']}/{stats['tokens']} tokens trained "
            f"({100 * stats['trained_fraction']:.1f}%)")


def mask_html(input_ids: list[int], mask: list[int], tokenizer, max_tokens: int | None = None) -> str:
    """The conversation as HTML: trained tokens (mask 1) highlighted, masked tokens plain grey."""
    spans, run, state = [], [], None

    def flush():
        if run:
            text = html.escape(tokenizer.decode(run))
            style = "background:#c8f7c5;color:#000" if state else "color:#777"
            spans.append(f'<span style="{style}">{text}</span>')

    for tok_id, bit in list(zip(input_ids, mask))[:max_tokens]:
        if bit != state:
            flush()
            run, state = [], bit
        run.append(tok_id)
    flush()
    more = "" if max_tokens is None or len(input_ids) <= max_tokens else f"\n… {len(input_ids) - max_tokens} more tokens"
    return ('<div style="font-family:monospace;font-size:12px;white-space:pre-wrap;border:1px solid #ddd;'
            f'padding:6px;max-height:600px;overflow:auto">{"".join(spans)}{html.escape(more)}</div>')


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
    """TRL SFTConfig; `load_model`: the trainer loads the model from a path (fp32 on CPU, bf16 on GPU)."""
    from trl import SFTConfig

    s = cfg.sft
    on_gpu = device.startswith("cuda")
    dtype = ("bfloat16" if cfg.models.policy.dtype == "auto" else cfg.models.policy.dtype) if on_gpu else "float32"
    return SFTConfig(
        model_init_kwargs={"dtype": dtype} if load_model else None,
        output_dir=str(trainer_output_dir(cfg)),
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
        run_name=f"{cfg.run.name}-sft",
        seed=cfg.run.seed,
        save_only_model=False,  # keep optimizer state so a resumed run continues exactly
    )


def make_trainer(cfg: Config, dataset, model, tokenizer, peft_config=None, device: str = "cpu"):
    from trl import SFTTrainer

    from . import trl_compat

    trl_compat.install()  # TRL 1.15's SFT loss also goes through the Triton-only fused lm-head (no-op with Triton)
    return SFTTrainer(model=model, args=training_args(cfg, device, load_model=isinstance(model, str)),
                      train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)


def last_checkpoint(cfg: Config) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    out = trainer_output_dir(cfg)
    return get_last_checkpoint(str(out)) if out.is_dir() else None


def _save_final(cfg: Config, trainer, tokenizer) -> Path:
    """Save a plain (merged) model + tokenizer that `from_pretrained` loads, plus the trainer state (loss log)."""
    final = checkpoint_path(cfg)
    s = cfg.sft
    if s.lora and s.backend == "unsloth":
        trainer.model.save_pretrained_merged(str(final), tokenizer, save_method="merged_16bit")
    elif s.lora:
        adapter = final.with_name("sft-adapter")
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

    from .launch import finished

    resume = last_checkpoint(cfg) if cfg.sft.resume else None
    if finished("sft", resume, cfg.sft.max_steps, stats_path(cfg), checkpoint_path(cfg) / "trainer_state.json"):
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
    wandb_run = tracking.init_wandb(cfg, "sft") if cfg.wandb.mode != "disabled" and main_process else None
    trainer = make_trainer(cfg, dataset, model, tokenizer, peft_config, device)
    if resume:
        print(f"resuming SFT from {resume}")
    out = trainer.train(resume_from_checkpoint=resume)
    final = _save_final(cfg, trainer, tokenizer)
    result = SFTResult(final, data_stats, list(trainer.state.log_history), dict(out.metrics))
    if trainer.accelerator.is_main_process:
        stats_path(cfg).write_text(json.dumps({"checkpoint": str(final), "data": data_stats,
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


# ---------------------------------------------------------------- multi-GPU launch
def load_result(cfg: Config) -> SFTResult:
    """The result of a finished run, read back from the run folder (after a subprocess launch)."""
    final = checkpoint_path(cfg)
    stats = json.loads(stats_path(cfg).read_text())
    state = json.loads((final / "trainer_state.json").read_text())
    return SFTResult(final, stats["data"], state["log_history"], stats["metrics"])


def run(cfg: Config) -> SFTResult:
    """In-process when one process is configured; else `accelerate launch` this module as a subprocess."""
    if cfg.sft.num_processes <= 1:
        return train(cfg)
    from .launch import launch

    launch(cfg, "sft")
    return load_result(cfg)


# ---------------------------------------------------------------- plots
def loss_figure(log_history: list[dict[str, Any]], title: str = "SFT training loss"):
    import plotly.graph_objects as go

    points = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    fig = go.Figure(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                               name="loss"))
    fig.update_layout(title=title, xaxis_title="optimizer step", yaxis_title="loss (assistant tokens)",
                      template="plotly_white")
    return fig


# ---------------------------------------------------------------- CLI (what `accelerate launch -m wdlib.sft` runs)
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SFT with observation masking (WebDancer)")
    parser.add_argument("--params", required=True, help="params YAML (e.g. params/7b.yaml)")
    args = parser.parse_args(argv)
    result = train(load_config(args.params))
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_stats(result.data))
        print(f"saved {result.checkpoint}")


if __name__ == "__main__":
    main()

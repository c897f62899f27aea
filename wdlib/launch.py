"""How a training stage (`wdlib.sft`, `wdlib.dapo`) runs: the finished-run check, and `accelerate launch`.

`finished`: transformers' Trainer, resumed from a checkpoint that already reached `max_steps` in the middle
of an epoch, takes one more optimizer step before it checks; so a stage whose last checkpoint is finished does not
call `train()` again but returns the result it saved.

A stage runs in-process when its section has `num_processes: 1`; otherwise the notebook calls `launch(cfg, stage)`,
which writes the exact config it was given (papermill overrides included) next to the run and starts
`accelerate launch --config_file params/<accelerate_config> --num_processes N -m wdlib.<stage> --params FILE`.
The stage module's `main()` reads that file back, so every rank trains on the same settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from .config import Config


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


def launch(cfg: Config, stage: str) -> None:
    """Run `wdlib.<stage>` under `accelerate launch` and wait; raises CalledProcessError when it fails."""
    params_file = cfg.run_dir / f"{stage}_params.yaml"
    params_file.parent.mkdir(parents=True, exist_ok=True)
    params_file.write_text(yaml.safe_dump(cfg.dump(), sort_keys=False))
    cmd = accelerate_command(cfg, stage, params_file)
    print("launching:", " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=str(cfg.resolve_path(".")))

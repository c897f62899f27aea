"""wandb runs: one project, group = run name, job_type = stage, files under outputs/<run>/wandb.

Params choose offline (default; `wandb sync outputs/<run>/wandb/offline-run-*` later), online or disabled.
The config logged is the params dump, which holds only env-var *names* (params with keys are refused at load), and
goes through the redaction pass all the same (`wdlib.redact`).
"""

from __future__ import annotations

import os

from wdlib.config import Config
from wdlib.redact import redact_obj


def init_wandb(cfg: Config, job_type: str, **kwargs):
    import wandb

    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["WANDB_MODE"] = cfg.wandb.mode  # also what TRL's WandbCallback sees
    os.environ["WANDB_PROJECT"] = cfg.wandb.project
    os.environ["WANDB_RUN_GROUP"] = cfg.run.name
    os.environ["WANDB_JOB_TYPE"] = job_type
    return wandb.init(
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        group=cfg.run.name,
        job_type=job_type,
        name=f"{cfg.run.name}-{job_type}",
        mode=cfg.wandb.mode,
        dir=str(cfg.run_dir),
        config=redact_obj(cfg.dump()),
        reinit="finish_previous",
        **kwargs,
    )


def report_to(cfg: Config) -> list[str]:
    """`report_to` for TRL/transformers TrainingArguments."""
    return [] if cfg.wandb.mode == "disabled" else ["wandb"]

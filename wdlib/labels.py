"""Display names shared by the evaluation tables (`wdlib.evaluate`) and the figures (`wdlib.plots`): benchmarks,
levels, the stages' models, metric names, and the paper's names for our backbones. Imports nothing from wdlib.
"""

from __future__ import annotations

import re

BENCHMARK_TITLES = {"gaia": "GAIA", "webwalkerqa": "WebWalkerQA", "local": "Local web"}
LEVEL_TITLES = {"1": "Level 1", "2": "Level 2", "3": "Level 3", "easy": "Easy", "medium": "Medium", "hard": "Hard"}
# the models a run evaluates: the policy, then its SFT (+ rejection round: sft-rs) and DAPO checkpoints, in order
STAGES = ("base", "sft", "sft-rs", "dapo")
STAGE_TITLES = {"base": "ReAct (base)", "sft": "SFT", "sft-rs": "SFT + own samples (RS)",
                "dapo": "SFT+DAPO (WebDancer)"}


def model_title(label: str) -> str:
    return STAGE_TITLES.get(label, label)


def metric_names(k: int) -> list[str]:
    """The headline metrics for k runs (with k = 1, Pass@k is Pass@1: listed once)."""
    return list(dict.fromkeys(["pass@1", f"pass@{k}", f"cons@{k}"]))


def published_backbone(model_name: str) -> str | None:
    """The paper's backbone name for a policy model id (Qwen/Qwen2.5-7B-Instruct → Qwen-2.5-7B), else None."""
    key = re.sub(r"[^a-z0-9.]", "", model_name.lower())
    for pattern, backbone in (("qwq32b", "QwQ-32B"), ("qwen2.532b", "Qwen-2.5-32B"), ("qwen2.57b", "Qwen-2.5-7B")):
        if pattern in key:
            return backbone
    return None

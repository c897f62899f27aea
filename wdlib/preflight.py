"""Preflight: what a params file needs from this machine, checked in seconds before any notebook starts.

    python -m wdlib.pipeline params/7b.yaml --check            # every notebook; exit 1 and the list when not ready
    python -m wdlib.pipeline params/7b.yaml --check --only 05  # only what notebook 05 needs

`wdlib.pipeline` runs it before the first notebook (unless `--no-check`), and `wdlib.launch` checks its part before
an `accelerate launch`, so a GPU user's first failure is a list, not a crash an hour in. Per notebook it checks:

- GPUs: CUDA devices ≥ what the params use (`run.device: cuda`; `<stage>.num_processes` for SFT / DAPO; the vLLM
  policy's `tensor_parallel_size`; unsloth);
- packages: deepspeed for a DeepSpeed accelerate config, vllm for a vLLM backend or `dapo.use_vllm`, unsloth for
  `sft.backend: unsloth` (found without importing them);
- models: every model a notebook uses resolves: `embedded:…`, a local folder, an HF id in the local cache or (online)
  on the hub; an OpenAI-compatible endpoint has its `base_url` and its key variable set (by name: values are never
  read into messages);
- keys and data: `SERPAPI_API_KEY` (or `web.serpapi_key_env`) for SerpAPI search; GAIA (gated) needs `HF_TOKEN` or
  `eval.gaia_path`; the files params point to exist (`agent.webdancer_prompt_file`, eval data, the checkpoint a
  `report.model: sft | dapo` names when its training notebook is not selected);
- disk: free space under the run folder ≥ an estimate of the checkpoints SFT and DAPO write (final model plus the
  trainer checkpoints with optimizer state, `save_total_limit` / `save_steps`).

Each problem names the params file, the key and the fix. Warnings (e.g. an external trajectory file missing, which the
stage skips) are printed but do not fail the check.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from wdlib.config import Config, ModelSpec
from wdlib.launch import cuda_devices, launch_problems

NOTEBOOKS = ("01", "02", "03", "04", "05", "06")


@dataclass
class Problem:
    key: str  # the params key to change, or what to provide
    message: str
    fix: str
    warning: bool = False

    def render(self, source: str) -> str:
        return f"{'warning' if self.warning else 'problem'}: {source}: {self.key}: {self.message}\n    fix: {self.fix}"


# ------------------------------------------------------------------ what each notebook uses
def _judge_needed(cfg: Config, notebooks: set[str]) -> bool:
    """Whether a selected notebook asks `models.judge` (LLM judge modes, the funnel's LLM review, audit judges, the
    report's LLM citation check)."""
    llm = cfg.judge.mode != "rules"
    modes = {cfg.eval.judge.get(b, cfg.judge.mode) for b in cfg.eval.benchmarks}
    audits = any(j.mode != "rules" and j.model is None for j in cfg.eval.judges)
    return bool(("01" in notebooks and (llm or cfg.filters.llm_quality_check)) or ("04" in notebooks and llm)
                or ("05" in notebooks and (modes - {"rules"} or audits))
                or ("06" in notebooks and cfg.report.citation_check == "llm"))


def models_used(cfg: Config, notebooks: set[str]) -> dict[str, ModelSpec]:
    """params key → the model spec a selected notebook loads or calls."""
    used: dict[str, ModelSpec] = {}
    policy = cfg.models.policy
    if "01" in notebooks:
        used["models.teacher"] = cfg.models.teacher
    if notebooks & {"01", "04", "05", "06"} and cfg.models.summarizer is not None:
        used["models.summarizer"] = cfg.models.summarizer
    if "03" in notebooks:
        used["sft.init" if cfg.sft.init else "models.policy"] = policy.model_copy(
            update={"name": cfg.sft.init or policy.name, "backend": "transformers"})
    if "04" in notebooks:
        if cfg.dapo.init not in (None, "sft"):
            used["dapo.init"] = policy.model_copy(update={"name": cfg.dapo.init, "backend": "transformers"})
        elif not (cfg.paths.checkpoint_dir("sft") / "config.json").is_file() and "03" not in notebooks:
            used["models.policy"] = policy.model_copy(update={"backend": "transformers"})  # DAPO falls back to it
    if "05" in notebooks:
        used["models.policy"] = policy
        used.update({f"eval.extra_models.{k}": spec for k, spec in cfg.eval.extra_models.items()})
        for j in cfg.eval.judges:
            if j.mode != "rules" and j.model is not None:
                used[f"eval.judges.{j.name}.model"] = j.model
    if "06" in notebooks:
        used.update(_report_models(cfg, notebooks))
    if _judge_needed(cfg, notebooks) and cfg.models.judge is not None:
        used["models.judge"] = cfg.models.judge
    return used


def _report_models(cfg: Config, notebooks: set[str]) -> dict[str, ModelSpec]:
    """Notebook 06's research model (as `wdlib.report.resolve_model` reads `report.model`) and its writer."""
    name, policy, used = cfg.report.model.strip(), cfg.models.policy, {}
    if name in cfg.eval.extra_models:
        used[f"eval.extra_models.{name}"] = cfg.eval.extra_models[name]
    elif name in ("base", "latest", "sft", "dapo"):  # latest falls back to base; sft / dapo: _check_data
        used["models.policy"] = policy
    else:
        used["report.model"] = policy.model_copy(update={"name": name})
    if cfg.report.writer is not None:
        used["report.writer"] = cfg.report.writer
    return used


# ------------------------------------------------------------------ checks
def _gpus_needed(cfg: Config, notebooks: set[str]) -> list[tuple[str, int]]:
    """(params key, CUDA GPUs it needs) for what the selected notebooks run in this process."""
    needs = []
    if cfg.run.device == "cuda" and notebooks & {"01", "03", "04", "05", "06"}:
        needs.append(("run.device", 1))
    if "03" in notebooks and cfg.sft.backend == "unsloth":
        needs.append(("sft.backend", max(1, cfg.sft.num_processes)))
    if "04" in notebooks and cfg.dapo.use_vllm:
        needs.append(("dapo.use_vllm", cfg.models.policy.tensor_parallel_size))
    used = models_used(cfg, notebooks)
    for key, spec in used.items():
        if spec.backend == "vllm":
            needs.append((f"{key}.tensor_parallel_size", spec.tensor_parallel_size))
    return needs


def _check_packages(cfg: Config, notebooks: set[str]) -> list[Problem]:
    wanted = {}
    vllm_models = [key for key, spec in models_used(cfg, notebooks).items() if spec.backend == "vllm"]
    if vllm_models:
        wanted["vllm"] = (f"{vllm_models[0]}.backend", f"{', '.join(vllm_models)} run(s) on vLLM")
    if "04" in notebooks and cfg.dapo.use_vllm:
        wanted["vllm"] = ("dapo.use_vllm", "DAPO rollouts use vLLM")
    if "03" in notebooks and cfg.sft.backend == "unsloth":
        wanted["unsloth"] = ("sft.backend", "SFT uses unsloth")
    return [Problem(key, f"{why}, but {package} is not installed",
                    f"pip install -e '.[gpu]' on a CUDA machine, or change {key}")
            for package, (key, why) in wanted.items() if importlib.util.find_spec(package) is None]


def _hf_cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    return isinstance(found, str)


def _check_model(key: str, spec: ModelSpec, env: Mapping[str, str], online_timeout_s: float) -> list[Problem]:
    if spec.backend == "openai":
        out = []
        if not spec.base_url:
            out.append(Problem(f"{key}.base_url", "an OpenAI-compatible endpoint needs a base_url",
                               "set it (https://api.openai.com/v1, or http://HOST:PORT/v1 of `vllm serve`)"))
        if spec.api_key_env and not env.get(spec.api_key_env):
            out.append(Problem(f"{key}.api_key_env", f"the environment variable {spec.api_key_env} (the key for "
                               f"{spec.name}) is not set", f"export {spec.api_key_env}=... (or set api_key_env: null "
                               "for a local server that needs no key)"))
        return out
    name = spec.name
    if name.startswith("embedded:"):
        from wdlib.models import EMBEDDED

        return [] if name in EMBEDDED else [Problem(key, f"unknown embedded model {name!r}",
                                                    f"use one of {sorted(EMBEDDED)} or an HF id / path")]
    if name.startswith(("/", "./", "../", "~")) or Path(os.path.expanduser(name)).exists():
        path = Path(os.path.expanduser(name))
        if not (path / "config.json").is_file():
            return [Problem(key, f"{path} is not a model folder (no config.json)", "point it to a saved checkpoint")]
        return []
    if _hf_cached(name):
        return []
    if env.get("HF_HUB_OFFLINE") == "1":
        return [Problem(key, f"{name} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1",
                        f"download it first (huggingface-cli download {name}) or unset HF_HUB_OFFLINE")]
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(name, timeout=online_timeout_s, token=env.get("HF_TOKEN") or None)
    except Exception as exc:  # offline, unknown id, gated without a token: all are "cannot get this model"
        return [Problem(key, f"{name} is neither cached nor reachable on the hub ({type(exc).__name__})",
                        "check the id and the network, export HF_TOKEN for a gated model, or give a local path")]
    return []


def _check_data(cfg: Config, notebooks: set[str], env: Mapping[str, str]) -> list[Problem]:
    out = []
    if notebooks & {"01", "03", "04", "05", "06"} and cfg.agent.prompt == "webdancer":
        path = cfg.resolve_path(cfg.agent.webdancer_prompt_file)
        if not path.is_file():
            out.append(Problem("agent.webdancer_prompt_file", f"{path} not found",
                               "point it to WebDancer's released sample_traj.jsonl (or your copy)"))
    search = notebooks & {"01", "04", "05", "06"}
    if search and cfg.web.search_backend == "serpapi" and not env.get(cfg.web.serpapi_key_env):
        out.append(Problem("web.serpapi_key_env", f"live search needs {cfg.web.serpapi_key_env}, which is not set",
                           f"export {cfg.web.serpapi_key_env}=... (serpapi.com), or web.search_backend: local"))
    if "05" in notebooks and "gaia" in cfg.eval.benchmarks:
        if cfg.eval.gaia_path is None and not env.get("HF_TOKEN"):
            out.append(Problem("eval.gaia_path", "GAIA is gated on the hub and HF_TOKEN is not set",
                               "accept GAIA's terms on huggingface.co and export HF_TOKEN, or set eval.gaia_path to a "
                               "local copy of the validation split"))
        for key in ("gaia_path", "gaia_task_ids"):
            value = getattr(cfg.eval, key)
            if value is not None and not cfg.resolve_path(value).exists():
                out.append(Problem(f"eval.{key}", f"{cfg.resolve_path(value)} not found", "fix the path"))
    if "05" in notebooks and "webwalkerqa" in cfg.eval.benchmarks and cfg.eval.webwalkerqa_path:
        if not cfg.resolve_path(cfg.eval.webwalkerqa_path).is_file():
            out.append(Problem("eval.webwalkerqa_path", f"{cfg.resolve_path(cfg.eval.webwalkerqa_path)} not found",
                               "fix the path, or set it to null to load WebWalkerQA from the hub", warning=True))
    stage = cfg.report.model.strip()
    if "06" in notebooks and stage in ("sft", "dapo") and {"sft": "03", "dapo": "04"}[stage] not in notebooks:
        path = cfg.paths.checkpoint_dir(stage)
        if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            out.append(Problem("report.model", f"{stage}: no checkpoint at {path}",
                               f"run notebook {'03' if stage == 'sft' else '04'} first, or report.model: latest"))
    if "03" in notebooks and cfg.sft.include_external:
        for p in cfg.trajectories.external:
            if not cfg.resolve_path(p).is_file():
                out.append(Problem("trajectories.external", f"{cfg.resolve_path(p)} not found (SFT skips it)",
                                   "fix the path or remove it", warning=True))
    return out


def parameter_count(name: str) -> float | None:
    """Parameters of a model, from its name (Qwen2.5-7B → 7e9, SmolLM2-135M → 1.35e8) or a local folder's weights."""
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        size = sum(f.stat().st_size for f in path.glob("*.safetensors")) or sum(
            f.stat().st_size for f in path.glob("*.bin"))
        if size:
            dtype_bytes = 4 if "float32" in (path / "config.json").read_text(errors="ignore") else 2
            return size / dtype_bytes
    if name.startswith("embedded:smollm2-135m"):
        return 135e6
    sizes = re.findall(r"(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", name.lower())
    if not sizes:
        return None
    value, unit = sizes[-1]
    return float(value) * (1e9 if unit == "b" else 1e6)


def checkpoint_bytes(cfg: Config, notebooks: set[str]) -> tuple[float, str]:
    """An estimate of what SFT and DAPO write: per stage, the final model (2 bytes per parameter in bf16, 4 in fp32)
    and each kept trainer checkpoint (weights + fp32 master weights + Adam's two moments: 16 bytes per parameter in
    bf16, 12 in fp32; LoRA: adapters only), and a line saying how it was estimated."""
    params = parameter_count(cfg.sft.init or cfg.models.policy.name)
    if params is None:
        return 0.0, "model size unknown (not in its name): disk not estimated"
    gpu = cfg.run.device == "cuda" or cfg.models.policy.dtype in ("bfloat16", "float16")
    weight, trainer = (2, 16) if gpu else (4, 12)
    total, parts = 0.0, []
    for stage in ("sft", "dapo"):
        if {"sft": "03", "dapo": "04"}[stage] not in notebooks:
            continue
        section = getattr(cfg, stage)
        steps = section.max_steps if section.max_steps > 0 else 10 * section.save_steps  # epochs: assume a few saves
        kept = section.save_total_limit
        n = math.ceil(steps / section.save_steps) if kept is None else min(kept, math.ceil(steps / section.save_steps))
        per = 0.02 * params * trainer if getattr(section, "lora", False) else params * trainer
        total += params * weight + n * per
        parts.append(f"{stage}: final model + {n} trainer checkpoint(s)")
    return total, f"{params / 1e9:.2f}B parameters; " + ", ".join(parts)


def _check_disk(cfg: Config, notebooks: set[str]) -> list[Problem]:
    needed, how = checkpoint_bytes(cfg, notebooks)
    if not needed:
        return []
    where = cfg.run_dir
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if free >= needed:
        return []
    return [Problem("run.output_dir", f"about {needed / 1e9:.0f} GB of checkpoints ({how}), {free / 1e9:.0f} GB free "
                    f"under {where}", "free space, point run.output_dir to a larger disk, or keep fewer checkpoints "
                    "(sft.save_total_limit, dapo.save_total_limit)")]


def check(cfg: Config, notebooks: Iterable[str] | None = None, *, env: Mapping[str, str] | None = None,
          gpus: int | None = None, online_timeout_s: float = 5.0) -> list[Problem]:
    """Everything the selected notebooks (default: all) need that this machine lacks (see the module docstring)."""
    env = os.environ if env is None else env
    nbs = set(notebooks or NOTEBOOKS)
    problems: list[Problem] = []
    needs = _gpus_needed(cfg, nbs)
    stages = [s for s, nb in (("sft", "03"), ("dapo", "04")) if nb in nbs and getattr(cfg, s).num_processes > 1]
    if needs or stages:
        gpus = cuda_devices() if gpus is None else gpus
        for key, n in needs:
            if gpus < n:
                problems.append(Problem(key, f"needs {n} CUDA GPU(s), this machine has {gpus}",
                                        "run on a GPU machine, or use the CPU params (params/smoke.yaml)"))
        for stage in stages:
            problems += [Problem(key, what, fix) for key, what, fix in launch_problems(cfg, stage, gpus=gpus)]
    problems += _check_packages(cfg, nbs)
    seen = set()
    for key, spec in models_used(cfg, nbs).items():
        ident = (spec.name, spec.base_url, spec.api_key_env) if spec.backend == "openai" else (spec.name,)
        if ident not in seen:
            seen.add(ident)
            problems += _check_model(key, spec, env, online_timeout_s)
    if _judge_needed(cfg, nbs) and cfg.models.judge is None:
        problems.append(Problem("models.judge", "an LLM judge mode is set (judge.mode / eval.judge / "
                                "filters.llm_quality_check / report.citation_check) but no judge model",
                                "set models.judge, or judge.mode: rules (report.citation_check: lexical)"))
    problems += _check_data(cfg, nbs, env)
    problems += _check_disk(cfg, nbs)
    return problems


def report(cfg: Config, problems: list[Problem], notebooks: Iterable[str] | None = None) -> str:
    nbs = ", ".join(sorted(set(notebooks or NOTEBOOKS)))
    failures = [p for p in problems if not p.warning]
    head = (f"preflight {cfg.source} (notebooks {nbs}): " +
            (f"{len(failures)} problem(s)" if failures else "ready") +
            (f", {len(problems) - len(failures)} warning(s)" if len(problems) > len(failures) else ""))
    return "\n".join([head] + [p.render(cfg.source) for p in problems])

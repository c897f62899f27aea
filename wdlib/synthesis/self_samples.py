"""The SFT policy's own samples: a rejection-sampling round (notebook 03, `sft.rejection.samples_per_question` > 0).

After the first SFT pass, the SFT checkpoint answers the SFT questions with the real tools, up to N samples per
question, stopping at the first that passes the teacher's filter funnel (format, grounded and correct answer,
quality): the same `sample_trajectories` as the teacher's, resumable, with the policy as the teacher. The second SFT
pass (`wdlib.sft.train_second_pass`) then continues from the first pass's checkpoint on the teacher's trajectories
plus the policy's kept ones, into `checkpoints/sft-rs` (eval label `sft-rs`; `dapo.init: sft-rs` starts DAPO there).

Files (`RunPaths`): `sft_policy_trajectories.jsonl` (every sample, with its verdicts), `sft_policy_funnel.json`,
`sft_policy_data.jsonl` (the kept ones, what the second pass reads with `sft.policy_samples`).
"""

from __future__ import annotations

import json
from typing import Any

from wdlib.aio import run_sync
from wdlib.config import Config
from wdlib.synthesis.filters import funnel_counts
from wdlib.synthesis.trajectories import sample_trajectories
from wdlib.trajectory import Trajectory, load_qa, write_jsonl


def sampling_config(cfg: Config) -> Config:
    """The run's config with the SFT checkpoint as the teacher and `sft.rejection`'s sampling settings."""
    r = cfg.sft.rejection
    sub = cfg.model_copy(deep=True)
    sub.models.teacher = cfg.models.policy.model_copy(update={"name": str(cfg.paths.checkpoint_dir("sft"))})
    sub.trajectories.samples_per_question = r.samples_per_question
    sub.trajectories.temperature, sub.trajectories.top_p, sub.trajectories.cot = r.temperature, r.top_p, "short"
    return sub


async def asample_policy(cfg: Config, toolbox: Any, client: Any = None, judge_client: Any = None,
                         progress: bool = True) -> tuple[list[Trajectory], dict[str, Any]]:
    """Sample the SFT policy on the SFT questions through the funnel; writes the three files, returns (every sample,
    funnel counts). `client` defaults to the SFT checkpoint served like the policy."""
    r = cfg.sft.rejection
    if r.samples_per_question == 0:
        raise ValueError(f"{cfg.source}: sft.rejection.samples_per_question is 0: no rejection round configured")
    if not (cfg.paths.checkpoint_dir("sft") / "config.json").is_file():
        raise FileNotFoundError(f"no SFT checkpoint at {cfg.paths.checkpoint_dir('sft')}: run the first SFT pass first")
    questions = load_qa(cfg.paths.qa)[:r.max_questions]
    sub = sampling_config(cfg)
    if client is None:
        from wdlib.llm import make_client
        from wdlib.models import pick_device

        client = make_client(sub.models.teacher, device=pick_device(cfg.run.device))
    samples = await sample_trajectories(questions, client, toolbox, sub, cfg.paths.policy_trajectories,
                                        judge_client=judge_client, progress=progress)
    kept = [t for t in samples if t.filters.get("kept")]
    counts = {**funnel_counts(samples), "questions": len(questions),
              "questions_with_kept": len({t.qa_id for t in kept}), "samples_per_question": r.samples_per_question}
    cfg.paths.policy_funnel.write_text(json.dumps(counts, indent=1))
    write_jsonl(cfg.paths.policy_data, kept)
    return samples, counts


def sample_policy(cfg: Config, toolbox: Any, **kwargs: Any) -> tuple[list[Trajectory], dict[str, Any]]:
    """`asample_policy` from sync code and notebooks."""
    return run_sync(asample_policy(cfg, toolbox, **kwargs))

"""DAPO (notebook 04): multi-turn agentic RL on TRL's GRPOTrainer.

    rollout   the trainer's rollout_func: concurrent multi-turn agent rollouts, observations masked; the RL dataset
    trainer   GRPOConfig, dynamic sampling (one hook), overlong shaping, training, `accelerate launch`

This module only re-exports; `python -m wdlib.dapo --params FILE` is `wdlib.dapo.trainer.main`.
"""

from wdlib.dapo.rollout import (ROLLOUTS_KEPT_PER_STEP, AgentRollout, load_questions, policy_client, prompt_dataset,
                                rollout_batch, transformers_policy_client)
from wdlib.dapo.trainer import (DAPOTrainer, build_trainer, grpo_config, informative_groups, init_model_path,
                                load_result, main, make_overlong_reward, merge_batches, overlong_penalty,
                                reward_funcs, run, select_rows, train)

__all__ = [
    "ROLLOUTS_KEPT_PER_STEP", "AgentRollout", "load_questions", "policy_client", "prompt_dataset", "rollout_batch",
    "transformers_policy_client",
    "DAPOTrainer", "build_trainer", "grpo_config", "informative_groups", "init_model_path", "load_result", "main",
    "make_overlong_reward", "merge_batches", "overlong_penalty", "reward_funcs", "run", "select_rows", "train",
]

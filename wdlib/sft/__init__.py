"""SFT (notebook 03): fine-tune the policy on agent trajectories, with tool responses masked from the loss.

    data    trajectories → conversations → tokens and the loss mask (what the trainer trains on, exactly)
    train   TRL SFTTrainer, resume, the final checkpoint; `accelerate launch` for several processes; the second pass
            after the rejection round (`wdlib.synthesis.self_samples`) on the policy's own kept samples (sft-rs)

This module only re-exports; `python -m wdlib.sft --params FILE` is `wdlib.sft.train.main`.
"""

from wdlib.sft.data import (MIN_OBSERVATION_TOKENS, TRUNCATION_MARK, Encoded, NoSFTData, build_dataset, encode,
                            format_stats, load_conversations, loss_mask, mask_html, reprompt, to_conversation,
                            training_chat_template)
from wdlib.sft.train import (SFTResult, last_checkpoint, load_model_and_tokenizer, load_result, main, make_trainer,
                             prepare_backend, run, second_pass_config, train, train_second_pass, training_args)

__all__ = [
    "MIN_OBSERVATION_TOKENS", "TRUNCATION_MARK", "Encoded", "NoSFTData", "build_dataset", "encode", "format_stats",
    "load_conversations", "loss_mask", "mask_html", "reprompt", "to_conversation", "training_chat_template",
    "SFTResult", "last_checkpoint", "load_model_and_tokenizer", "load_result", "main", "make_trainer",
    "prepare_backend", "run", "train", "training_args", "second_pass_config", "train_second_pass",
]

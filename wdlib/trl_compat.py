"""TRL 1.15 on machines without Triton: a pure-torch stand-in for the fused log-prob kernel.

TRL 1.15's GRPOTrainer always scores completions through `add_fused_lm_head`, whose kernel
(`trl.trainer.utils._ChunkedLogProbFunction`) is Triton-only: without Triton it is None and the first loss fails with
`'NoneType' object has no attribute 'apply'`. `install()` puts `TorchChunkedLogProb` in its place, only when the
kernel is missing. Same call signature, same maths (logit scale, softcap, temperature, logsumexp, optional outputs),
plain autograd for the backward, recomputed per token chunk so the `[N, vocab]` logits never stay in memory.

DELETE this module (and its `install()` call in wdlib.dapo) when the pins move to TRL >= 1.16, which ships its own
non-Triton fallback.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

OPTIONAL_OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
_LOGITS_PER_CHUNK = 1 << 24  # floats of logits materialized at once (64 MB in fp32)


def _chunk_outputs(hidden, weight, bias, targets, temperature, softcap, logit_scale, want_entropy):
    z = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    z = z / temperature
    log_z = torch.logsumexp(z, dim=-1)
    logprobs = z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_z
    if not want_entropy:
        return logprobs, log_z
    entropy = log_z - (torch.softmax(z, dim=-1) * z).sum(-1)
    return logprobs, entropy


def _chunk_stats(hidden, weight, bias, targets, temperature, softcap, logit_scale):
    """The non-differentiable extras (logging only)."""
    z = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    z = z / temperature
    log_p = z - torch.logsumexp(z, dim=-1, keepdim=True)
    return torch.logsumexp(2 * log_p, dim=-1), z.mean(-1), z.argmax(-1) == targets


class TorchChunkedLogProb:
    """Drop-in for `trl.kernels.ChunkedLogProbFunction` (only `.apply` is used by TRL)."""

    @staticmethod
    def apply(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
              temperature: float, chunk_size: int, final_logit_softcapping: float | None = None,
              logit_scale: float = 1.0, outputs: tuple[str, ...] = OPTIONAL_OUTPUTS):
        del chunk_size  # the vocabulary tile width of the Triton kernel; torch computes a whole row at once
        want_entropy = "entropy" in outputs
        rows = max(1, _LOGITS_PER_CHUNK // max(1, weight.shape[0]))
        args = (temperature, final_logit_softcapping, logit_scale, want_entropy)
        logprobs, entropies = [], []
        # N == 0 (every label masked) still runs once on the empty slice, so the result stays in the autograd graph.
        for start in range(0, max(1, hidden.shape[0]), rows):
            h, t = hidden[start:start + rows], targets[start:start + rows]
            if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
                lp, ent = checkpoint(_chunk_outputs, h, weight, bias, t, *args, use_reentrant=False)
            else:
                lp, ent = _chunk_outputs(h, weight, bias, t, *args)
            logprobs.append(lp)
            entropies.append(ent)
        logprobs = torch.cat(logprobs)
        entropy = torch.cat(entropies) if want_entropy else None
        log_sum_sq_probs = mean_logits = is_top1 = None
        if any(name in outputs for name in ("log_sum_sq_probs", "mean_logits", "is_top1")):
            with torch.no_grad():
                stats = [_chunk_stats(hidden[s:s + rows], weight, bias, targets[s:s + rows], temperature,
                                      final_logit_softcapping, logit_scale)
                         for s in range(0, max(1, hidden.shape[0]), rows)]
            log_sum_sq_probs, mean_logits, is_top1 = (torch.cat(parts) for parts in zip(*stats))
            log_sum_sq_probs = log_sum_sq_probs if "log_sum_sq_probs" in outputs else None
            mean_logits = mean_logits if "mean_logits" in outputs else None
            is_top1 = is_top1 if "is_top1" in outputs else None
        return logprobs, entropy, log_sum_sq_probs, mean_logits, is_top1


def install() -> bool:
    """Put the torch fallback in place when TRL's Triton kernel is unavailable. Returns True if installed."""
    from trl.trainer import utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", "absent") is None:
        trl_utils._ChunkedLogProbFunction = TorchChunkedLogProb
        return True
    return False

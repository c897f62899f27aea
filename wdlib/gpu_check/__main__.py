"""`python -m wdlib.gpu_check [--cpu | --prepare]`: the GPU check (what runs: `wdlib.gpu_check`'s docstring)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from wdlib.gpu_check import QUESTIONS, CannedTools, conversations, make_model, params, prepare, tokenizer_dir
from wdlib.params import from_dict
from wdlib.trajectory import QAPair


def run(device: str, model: str | None = None, tokenizer: str | None = None, keep: str | None = None) -> dict:
    import torch

    from wdlib.dapo.trainer import build_trainer
    from wdlib.sft.train import train as sft_train

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("[gpu_check] no CUDA GPU visible (torch.cuda.is_available() is False); --cpu for the dry run")
    timings, t0 = {}, time.perf_counter()
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    if model is None:
        model = str(make_model(work / "model", tokenizer_dir(tokenizer)))
    timings["model"] = time.perf_counter() - t0
    cfg = from_dict(params(work / "outputs", model, device), "gpu_check")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    t = time.perf_counter()
    sft = sft_train(cfg, conversations())
    timings["sft (2 steps)"] = time.perf_counter() - t
    losses = [h["loss"] for h in sft.log_history if "loss" in h]

    t = time.perf_counter()
    tools = CannedTools()
    qa = [QAPair(question=q, answer=a) for q, a in QUESTIONS]
    trainer = build_trainer(cfg, tools, qa=qa, output_dir=cfg.paths.trainer_dir("dapo"))
    weights = next(trainer.model.parameters())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    result = trainer.train()
    moved = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    trainer.save_model(str(cfg.paths.checkpoint_dir("dapo")))
    timings["dapo (2 steps)"] = time.perf_counter() - t
    steps = [h for h in trainer.state.log_history if "reward" in h]
    report = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "versions": {name: __import__(name).__version__ for name in ("torch", "transformers", "trl", "peft",
                                                                       "accelerate")},
        "model": model, "weights": f"{weights.dtype} on {weights.device}",
        "sft": {"steps": sft.log_history[-1].get("step"), "losses": losses, "checkpoint": str(sft.checkpoint)},
        "dapo": {"steps": result.global_step, "tool_calls": tools.calls, "tensors_moved": f"{moved}/{len(before)}",
                 "per_step": [{k: round(float(s[k]), 4) for k in ("reward", "dapo/kept_fraction", "time/rollout_s",
                                                                   "time/train_s") if k in s} for s in steps]},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if device == "cuda" else None,
    }
    kept = sum(s.get("dapo/kept_groups", 0) for s in steps)
    report["dapo"]["kept_groups"] = kept
    ok = (len(losses) >= 1 and all(x == x for x in losses) and result.global_step == 2 and kept > 0 and moved > 0
          and (device != "cuda" or weights.dtype == torch.bfloat16 and weights.device.type == "cuda"))
    report["passed"] = bool(ok)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    import wdlib.gpu_check

    ap = argparse.ArgumentParser(prog="python -m wdlib.gpu_check", description=wdlib.gpu_check.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="the dry run: the same code on CPU in fp32")
    ap.add_argument("--prepare", action="store_true", help="write .gpu_check/ (tokenizer, trl wheel) and stop")
    ap.add_argument("--model", help="a local checkpoint to use instead of the small random model")
    ap.add_argument("--tokenizer", help="tokenizer folder for the small model (default: .gpu_check/tokenizer)")
    ap.add_argument("--keep", help="keep the model and outputs in this folder")
    args = ap.parse_args(argv)
    if args.prepare:
        prepare()
        return 0
    start = time.perf_counter()
    report = run("cpu" if args.cpu else "cuda", args.model, args.tokenizer, args.keep)
    print("[gpu_check] " + json.dumps(report, indent=1))
    print(f"[gpu_check] total {time.perf_counter() - start:.1f} s")
    for part, seconds in report["timings_s"].items():
        print(f"[gpu_check] {part:<16} {seconds:>7.1f} s")
    print("GPU CHECK PASSED" if report["passed"] and not args.cpu else
          "CPU DRY RUN PASSED" if report["passed"] else "GPU CHECK FAILED")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# GPU check: SFT 2 steps + DAPO 2 steps, bf16 on one CUDA GPU, through the project's own code (wdlib/gpu_check.py
# says what runs). Needs torch, transformers, peft and accelerate on the GPU machine; trl comes from a wheel carried in
# .gpu_check/wheels/ (made with --prepare on the set-up machine, with the small model's tokenizer). Whole run <= 10 min.
#
#   scripts/gpu_check.sh --prepare   # set-up machine: write .gpu_check/ (tokenizer + trl wheel); carry it along
#   scripts/gpu_check.sh             # GPU machine: prints what ran, the timings, and GPU CHECK PASSED
#   scripts/gpu_check.sh --cpu       # the same code on CPU in fp32 (CI's dry run)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ -x .venv/bin/python && -z "${PYTHON:-}" ]]; then PY=.venv/bin/python; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 WANDB_MODE=disabled

if [[ "${1:-}" == "--prepare" ]]; then
  exec "$PY" -m wdlib.gpu_check --prepare
fi

# trl from the carried wheel when it is missing or another version (no dependencies: the machine's own are used)
shopt -s nullglob
wheels=(.gpu_check/wheels/trl-*.whl)
if (( ${#wheels[@]} )); then
  want=$(basename "${wheels[0]}" | cut -d- -f2)
  if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('trl') != '$want')" 2>/dev/null; then
    echo "[gpu_check] installing ${wheels[0]} (no dependencies)"
    "$PY" -m pip install --quiet --no-deps "${wheels[0]}"
  fi
fi

missing=$("$PY" - <<'PYEOF'
import importlib.util
need = ["torch", "transformers", "peft", "accelerate", "trl", "datasets", "pydantic", "yaml", "tqdm"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PYEOF
)
if [[ -n "$missing" ]]; then
  echo "[gpu_check] missing Python packages: $missing (pip install them, or carry their wheels in .gpu_check/wheels)" >&2
  exit 2
fi
"$PY" -c "import torch, transformers, trl; print(f'[gpu_check] torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, trl {trl.__version__}')"
exec timeout 600 "$PY" -m wdlib.gpu_check "$@"

#!/usr/bin/env bash
# Set-up on a fresh Debian + Python 3.11 machine: venv at .venv, pinned install, embedded model, local web.
# Idempotent and cached: a second run checks stamps and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
stamp() { sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.wdlib-installed" 2>/dev/null)" != "$(stamp)" ]; then
  echo "[setup] installing pinned packages (first time: several minutes)"
  "$VENV/bin/pip" install -q --upgrade pip            # pip 23 is too old for some packages' metadata
  "$VENV/bin/pip" install -q torch==2.13.0            # the CPU wheel on disk; never let a resolver pick CUDA torch
  "$VENV/bin/pip" install -q -e '.[dev]'
  "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (wdlib)" >/dev/null
  stamp > "$VENV/.wdlib-installed"
fi
# Headless Chromium: the tests render report pages in it (tests/chromium.py). The Debian package, installed once.
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  apt_chromium() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
  echo "[setup] installing chromium (apt-get) for the report page tests"
  if ! apt_chromium >/dev/null 2>&1; then   # no package lists yet: update once, then again
    $SUDO apt-get update -q >/dev/null 2>&1 || true
    apt_chromium >/dev/null 2>&1 || echo "[setup] WARNING: could not install chromium (needs apt-get and root);" \
      "the report page tests will skip"
  fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
"$VENV/bin/python" -m wdlib.models embedded:smollm2-135m   # converts the GGUF once, then a cache hit
# the smoke/CI web (the tests use it) and the web of the params being run (make run: params/mini.yaml)
"$VENV/bin/python" -m wdlib.web build --params params/smoke.yaml
if [ -n "${PARAMS:-}" ] && [ "$PARAMS" != params/smoke.yaml ]; then
  "$VENV/bin/python" -m wdlib.web build --params "$PARAMS"
fi
echo "[setup] ready"

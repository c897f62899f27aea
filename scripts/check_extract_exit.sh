#!/usr/bin/env bash
# Runs the page-extraction tests N times in a row (default 20) and fails on any crash: a non-zero exit or glibc's
# heap-corruption messages ("double free or corruption", "corrupted size", ...) in the output, at exit included.
# (trafilatura/newspaper3k on concurrent threads corrupted the heap about 1 run in 10; pages now parse in worker
# processes, wdlib.extract.)      bash scripts/check_extract_exit.sh [N]
set -u
cd "$(dirname "$0")/.."
N=${1:-20}
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE
log=$(mktemp)
bad=0
for i in $(seq 1 "$N"); do
  "$PY" -m pytest tests/test_extract.py -q -p no:cacheprovider >"$log" 2>&1
  rc=$?
  crash=$(grep -Eci "double free|corrupted size|corruption|segmentation fault|core dumped|malloc\(\)|free\(\): invalid" "$log")
  echo "run $i/$N: exit $rc, crash messages $crash, $(tail -n 1 "$log")"
  if [ "$rc" -ne 0 ] || [ "$crash" -ne 0 ]; then bad=$((bad + 1)); cat "$log"; fi
done
rm -f "$log"
echo "$((N - bad))/$N runs clean"
[ "$bad" -eq 0 ]

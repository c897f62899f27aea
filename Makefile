# The two commands of the README:   make run   (set up + the main job: WebDancer in miniature, params/mini.yaml)
#                                    make test  (set up + test suite; what .ci/run calls)
PARAMS ?= params/mini.yaml
VENV := .venv
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export OMP_WAIT_POLICY := PASSIVE
# glibc keeps freed KV-cache blocks in its arenas: an evaluation of 108 episodes peaked at ~13 GB RSS without these,
# 5.4 GB with them (2026-12-07, concurrency 32)
export MALLOC_ARENA_MAX := 2
export MALLOC_MMAP_THRESHOLD_ := 1048576
export MALLOC_TRIM_THRESHOLD_ := 1048576

.PHONY: setup run smoke test bench lab clean-run strip-notebooks

setup:
	PARAMS=$(PARAMS) bash scripts/setup.sh

run: setup
	$(VENV)/bin/python -m wdlib.pipeline $(PARAMS)

# the quick mechanics run (minutes): every stage once, accuracy not the point
smoke: setup
	$(VENV)/bin/python -m wdlib.pipeline params/smoke.yaml

test:
	PARAMS=params/smoke.yaml bash scripts/setup.sh   # the tests need only the smoke web
	$(VENV)/bin/python -m pytest -q

bench: setup
	for b in tests/bench/bench_*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

lab: setup
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --notebook-dir notebooks --allow-root --no-browser

strip-notebooks:
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace notebooks/*.ipynb

clean-run:
	rm -rf outputs/$(notdir $(basename $(PARAMS)))

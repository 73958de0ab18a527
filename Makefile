# Everything a fresh machine needs comes from here: Python 3.11+ and make are enough.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test soak bench lint fmt server worker clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The guide's scenario end to end; answers may be piped: printf 'y\nn\n' | make demo
demo: $(STAMP)
	$(BIN)/python -m hitl.demo

## Lint, type-check and the whole test suite (what CI runs).
test: $(STAMP) lint
	$(BIN)/python -m pytest

## The fault, race and fuzz suites ten times harder (not CI; about half an hour).
soak: $(STAMP)
	HITL_SOAK=10 $(BIN)/python -m pytest tests/test_faults.py tests/test_races.py \
		tests/test_fuzz_decisions.py tests/test_hostile_decisions.py tests/test_growth.py

## Latency, bulk decisions, paused runs at scale, per-step overhead vs a baseline (not CI).
bench: $(STAMP)
	$(BIN)/python -m bench.run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy hitl workflows activities worker.py starter.py

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## A Temporal dev server with the project's search attributes (state in .temporal/).
server: $(STAMP)
	$(BIN)/python -m hitl.devserver

worker: $(STAMP)
	$(BIN)/python worker.py

clean:
	rm -rf $(VENV) .temporal demo-workspace .pytest_cache .mypy_cache .ruff_cache

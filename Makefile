# Everything a fresh machine needs comes from here: Python 3.11+ and make are enough.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo example-openai-agents test chromium soak bench lint fmt server worker clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The guide's scenario end to end; answers may be piped: printf 'y\nn\n' | make demo
demo: $(STAMP)
	$(BIN)/python -m hitl.demo

## A support agent on the OpenAI Agents SDK, its refund and email approved through the gate
## (examples/openai_agents; offline unless OPENAI_API_KEY is set; --yes: ARGS=--yes).
example-openai-agents: $(STAMP)
	$(BIN)/python -m examples.openai_agents.run $(ARGS)

## Pydantic AI on Temporal with the gate (examples/pydantic_ai): offline unless OPENAI_API_KEY
## is set; answers may be piped: printf 'y\nn\nwrong address\n' | make example-pydantic-ai
.PHONY: example-pydantic-ai
example-pydantic-ai: $(STAMP)
	$(BIN)/python -m examples.pydantic_ai.run

## Lint, type-check and the whole test suite (what CI runs).
test: chromium $(STAMP) lint
	$(BIN)/python -m pytest

## The web inbox tests drive Debian's Chromium (tests/test_inbox.py; never a downloaded
## browser). Nothing to do when it is there; else installed when run as root; else stop.
CHROMIUM := /usr/bin/chromium
APT_CHROMIUM := apt-get install -y --no-install-recommends chromium fonts-dejavu-core
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make test: installing Debian's chromium for the web inbox tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && $(APT_CHROMIUM) -q; \
	else \
		echo "make test needs Debian's Chromium at $(CHROMIUM) for the web inbox tests:" \
			"run 'sudo $(APT_CHROMIUM)' (make test does it itself when run as root on Debian)." >&2; \
		exit 1; \
	fi

## The fault, race and fuzz suites ten times harder (not CI; about half an hour).
soak: $(STAMP)
	HITL_SOAK=10 $(BIN)/python -m pytest tests/test_faults.py tests/test_races.py \
		tests/test_fuzz_decisions.py tests/test_hostile_decisions.py tests/test_growth.py

## Latency, bulk decisions, paused runs at scale, per-step overhead vs a baseline (not CI).
bench: chromium $(STAMP)
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

## Everything the targets above made here (the venv with its Redis server, state, caches,
## test artifacts); Debian's Chromium, a system package, stays.
clean:
	rm -rf $(VENV) .temporal demo-workspace .pytest_cache .mypy_cache .ruff_cache \
		test-artifacts *.egg-info

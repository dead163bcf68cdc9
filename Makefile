# A newcomer needs only Python 3.11+: `make run` serves the API, `make test` runs the suite.
# Both build the project's own virtual environment (.venv) on first use, pinned by
# constraints.txt, and use the embedded PostgreSQL and Redis unless URLs are configured.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

MEMBERS ?= 1000000
SCENARIOS ?= earn,latency,read,storm,expiry
DURATION ?= 15

.PHONY: run test lint typecheck ci bench lock clean

run: $(READY)
	$(BIN)/loyalty serve

test: $(READY)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(READY)
	$(BIN)/ruff check .

typecheck: $(READY)
	$(BIN)/mypy

ci:
	.ci/run

bench: $(READY)
	$(BIN)/python -m bench.run --members $(MEMBERS) --scenarios $(SCENARIOS) --duration $(DURATION)

$(READY): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed; this is " + sys.version.split()[0] + " (set PYTHON=...)") if sys.version_info < (3, 11) else None'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --constraint constraints.txt --editable '.[dev]'
	@touch $@

lock: $(READY)
	@{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^#'; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

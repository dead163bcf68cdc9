# A newcomer needs only Python 3.11+: `make run` serves the API, `make test` runs the suite.
# Both build the project's own virtual environment (.venv) on first use, pinned by
# constraints.txt, with the `embedded` extra: the PostgreSQL and Redis used unless URLs are
# configured.

# The Python of the image (the Dockerfile's base image) when this machine has it, so the suite
# tests what ships; any other 3.11+ works, with a note.
IMAGE_PYTHON := $(shell sed -n 's/^ARG PYTHON_IMAGE=python:\([0-9]*\.[0-9]*\).*/\1/p' Dockerfile)
PYTHON ?= $(shell python$(IMAGE_PYTHON) -c '' 2>/dev/null && echo python$(IMAGE_PYTHON) || echo python3)
VENV ?= .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

MEMBERS ?= 1000000
# Empty: the harness's own default list (bench/README.md).
SCENARIOS ?=
DURATION ?= 15
# REUSE=1: the data set an earlier run kept (or left by failing), when it holds MEMBERS members.
REUSE ?=
# pytest-xdist workers for `make test`: one per core of a small machine. TEST_WORKERS=0 runs
# the suite in one process.
TEST_WORKERS ?= 2

.PHONY: run test fuzz lint typecheck ci bench lock clean

run: $(READY)
	$(BIN)/loyalty serve

test: $(READY)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# schemathesis against the served OpenAPI document, as a member, a terminal and an admin.
fuzz: $(READY)
	$(BIN)/python -m tests.fuzz $(FUZZ_ARGS)

lint: $(READY)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(READY)
	$(BIN)/mypy

ci:
	.ci/run

bench: $(READY)
	$(BIN)/python -m bench.run --members $(MEMBERS) --duration $(DURATION) \
		$(if $(SCENARIOS),--scenarios $(SCENARIOS)) $(if $(REUSE),--reuse)

$(READY): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed; this is " + sys.version.split()[0] + " (set PYTHON=...)") if sys.version_info < (3, 11) else None'
	@# A .venv without pip is what a failed `python3 -m venv` leaves (no python3-venv on
	@# Debian): made again rather than kept, so the next run after the fix works.
	@$(BIN)/python -m pip --version > /dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	@$(BIN)/python -c 'import sys; v = "%d.%d" % sys.version_info[:2]; v == "$(IMAGE_PYTHON)" or print(f"note: $(VENV) runs Python {v}, the image Python $(IMAGE_PYTHON); install python$(IMAGE_PYTHON) and run make clean to test what ships")'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --constraint constraints.txt --editable '.[dev,embedded]'
	@touch $@

lock: $(READY)
	@{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^#'; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

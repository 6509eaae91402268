# The README's commands: `make demo` runs the daemon on a simulated fleet, `make test` runs
# every check. Both create the virtual environment they need on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck unit test-full bench bench-listeners clean system-deps fuzz

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Debian's programs and the local services the integration tests use (root installs them).
system-deps:
	bash .ci/system-deps

# Six workers on two cores: most of the suite waits on child processes, sockets and
# PostgreSQL, not on the CPU (docs/testing.md, "Suite time").
unit: $(STAMP) system-deps
	$(BIN)/trial --jobs=6 tests

test: lint typecheck unit

# The acceptance-scale tests at the issues' full figures (tests/scale.py): slower.
test-full: $(STAMP) system-deps
	FEP_TEST_SCALE=full $(BIN)/trial --jobs=6 tests

demo: $(STAMP)
	$(BIN)/python -m fep.sim.demo

bench: $(STAMP)
	$(BIN)/python -m fep.bench

# The listeners under junk load (docs/benchmarks.md): a few minutes, the real daemon.
bench-listeners: $(STAMP)
	$(BIN)/python -m fep.bench --only listeners

clean:
	rm -rf $(VENV) _trial_temp* var

# Coverage-guided fuzzing (atheris) of every decoder, FUZZ_SECONDS per target; crashing
# inputs go to tests/fuzz/crashes/<target>/. FUZZ_TARGETS narrows it (see --list).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
$(VENV)/.fuzz: $(STAMP)
	$(BIN)/pip install --quiet -e '.[fuzz]' --config-settings editable_mode=compat
	touch $(VENV)/.fuzz

fuzz: $(VENV)/.fuzz
	$(BIN)/python -m tests.fuzz.run --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

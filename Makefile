# realtime-ai: `make run` runs the fleet on its demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps run test test-fast lint docs format bench clean

$(STAMP): pyproject.toml
	bash scripts/install_system_deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/install_system_deps.sh

run: $(STAMP)
	$(BIN)/rtai up $(ARGS)

# Two phases: most tests on TEST_JOBS processes (a file stays on one), then the `serial` ones alone
# (tests/conftest.py names them), without xdist loaded: no plugin's xdist hook runs at their end.
# Exit 5 is "no test selected" (a PYTEST_ARGS path with none of a phase).
TEST_JOBS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile -m "not serial" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest -p no:xdist -m serial $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

docs: $(STAMP)
	$(BIN)/python -m devkit.reference --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.fleet_vs_direct $(ARGS)
	$(BIN)/python -m benchmarks.kill_requeue

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info site

# Every target bootstraps .venv first (created with the machine's python3). The stamp file is
# rebuilt only when pyproject.toml changes, so a second run installs nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test lint clean bench-micro

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests, which is a failure here"; exit 1; fi; \
	exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check server_framework handlers protocols tests benchmarks docs
	$(BIN)/ruff format --check server_framework handlers protocols tests benchmarks docs
	$(BIN)/mypy server_framework handlers protocols docs/examples

bench-micro: $(STAMP)
	$(BIN)/python -m pytest benchmarks/micro -q -p no:randomly --benchmark-only \
		--benchmark-columns=min,median,ops --benchmark-sort=name $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis .benchmarks docs/_build
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Every target bootstraps .venv first (created with the machine's python3). The stamp file is
# rebuilt only when pyproject.toml changes, so a second run installs nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test test-pure lint clean bench-micro docs

install: $(STAMP)

# The install compiles the engine (server_framework/_cengine.pyx, pyproject.toml's ext-modules)
# with the machine's C compiler, or falls back to the pure-Python engine and says so (CI sets
# CFLAGS=-Werror and checks that the compiled engine runs).
$(STAMP): pyproject.toml server_framework/_cengine.pyx
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@$(BIN)/python -c "from server_framework.engine import ENGINE, REASON; print(f'engine: {ENGINE} ({REASON})')"
	@touch $(STAMP)

# `make test`: the whole suite on the engine that runs by default (compiled when built);
# `make test-pure`: the whole suite again on the pure-Python engine (CI runs both).
# Both compile the sources to bytecode first: the suite starts hundreds of Python processes
# (the command line, scripts, workers), and where PYTHONDONTWRITEBYTECODE is set (CI runners)
# each would otherwise compile every module it imports again.
BYTECODE := $(BIN)/python -m compileall -q -j 0 server_framework handlers protocols benchmarks tests docs/examples > /dev/null

test: $(STAMP)
	@$(BYTECODE)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests, which is a failure here"; exit 1; fi; \
	exit $$rc

# test-pure leaves out what the engine does not run: the benchmark harness, the Sphinx build
# (make docs builds it), the import graph and public API checks, the shadowing check at
# import, the reloader and supervisor processes, and the pytest plugin's pytester runs.
PURE_SKIP := --ignore=tests/functional/test_benchmarks_suite.py \
	--ignore=tests/functional/test_benchmarks_instructions.py \
	--ignore=tests/functional/test_benchmarks_report.py \
	--ignore=tests/functional/test_docs_build.py \
	--ignore=tests/functional/test_cli_reload.py \
	--ignore=tests/functional/test_cli_restart.py \
	--ignore=tests/functional/test_shadowing.py \
	--ignore=tests/testing/test_pytest_plugin.py \
	--ignore=tests/test_import_graph.py \
	--ignore=tests/test_public_api.py

test-pure: $(STAMP)
	@$(BYTECODE)
	@SERVER_FRAMEWORK_PURE_PYTHON=1 $(BIN)/python -m pytest $(PURE_SKIP) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-pure: pytest collected no tests, which is a failure here"; exit 1; fi; \
	exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check server_framework handlers protocols tests benchmarks docs
	$(BIN)/ruff format --check server_framework handlers protocols tests benchmarks docs
	$(BIN)/mypy server_framework handlers protocols docs/examples

bench-micro: $(STAMP)
	$(BIN)/python -m pytest benchmarks/micro -q -p no:randomly --benchmark-only \
		--benchmark-columns=min,median,ops --benchmark-sort=name $(PYTEST_ARGS)

# `make docs`: the Sphinx site in docs/_build/html; any warning fails the build.
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis .benchmarks docs/_build
	rm -f server_framework/_cengine.c server_framework/_cengine.*.so
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# `make bench`: the benchmark suite (benchmarks/README.md). Its own stamp installs the bench
# extra once (again only when pyproject.toml changes); the C load generators come from Debian
# when they are missing and we are root, else the suite's own generator stands in.
# BENCH_ARGS passes options, e.g. make bench BENCH_ARGS="--quick".
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_ARGS ?=

.PHONY: bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@missing=""; \
	command -v redis-benchmark >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	command -v dnsperf >/dev/null 2>&1 || missing="$$missing dnsperf"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make bench: installing$$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1; } || \
		echo "make bench: could not install$$missing; the suite's own generator stands in"; \
	fi
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# `make serve`: the demo, an echo server speaking JSON lines on TCP and JSON datagrams on UDP,
# on $(HOST):$(PORT) (e.g. make serve PORT=9100; HOST=[::1] for IPv6). SERVE_ARGS passes more
# options, e.g. make serve SERVE_ARGS="--workers 2 --log-level debug". Ctrl-C stops it.
HOST ?= 127.0.0.1
PORT ?= 9000
SERVE_ARGS ?=

.PHONY: serve

serve: $(STAMP)
	@echo "echo server on tcp+udp $(HOST):$(PORT) - try: echo '{\"hello\": 1}' | nc -q1 $(HOST) $(PORT)   (UDP: nc -u -w1 $(HOST) $(PORT))"
	@exec $(BIN)/python -m server_framework serve server_framework.demo:EchoHandler \
		--tcp $(HOST):$(PORT) --udp $(HOST):$(PORT) --protocol json $(SERVE_ARGS)

# `make soak`: the reliability soak (tests/reliability, marker `soak`) for SOAK_SECONDS (default
# 180; the three loops' servers are soaked at the same time); `make test` runs it for 10 seconds.
SOAK_SECONDS ?= 180

.PHONY: soak

soak: $(STAMP)
	RELIABILITY_SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python -m pytest tests/reliability -m soak $(PYTEST_ARGS)

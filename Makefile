# The README's two commands are `make demo` and `make test`; both set up their own venv.
# `make demo` installs what the quickstart needs (the `train` extra); `make test` adds the
# dev tools, Spark and the backends' clients.
PYTHON ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test lint bench clean chromium proto

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "make: $(PYTHON) not found. headwater needs Python 3.11 or later: install it" \
	       "(Debian/Ubuntu: apt-get install python3.11 python3.11-venv) or name one with" \
	       "make PYTHON=/path/to/python3 $(MAKECMDGOALS)" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "make: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())');" \
	       "headwater needs 3.11 or later: make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(BIN)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e '.[train]'
	touch $@

$(BIN)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(BIN)/.demo

demo: $(BIN)/.demo
	$(BIN)/headwater quickstart --dir headwater-shop

test: $(BIN)/.installed lint chromium
	$(BIN)/pytest -q --durations=25  # the slowest tests, to keep CI under 30 minutes

# The web UI's browser tests drive Debian's chromium (Playwright downloads no browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# The gRPC modules, generated from the .proto files beside them (committed; a test checks
# they match what this command writes).
proto: $(BIN)/.installed
	$(BIN)/python -m grpc_tools.protoc -I src --python_out=src --grpc_python_out=src \
	  --pyi_out=src src/headwater/serving/grpc/inference.proto src/headwater/serving/grpc/headwater.proto

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) headwater-shop .pytest_cache

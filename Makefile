# Two entry points a newcomer needs: `make run` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The browser tests drive Debian's Chromium (Playwright's own browser download does not work
# everywhere); installed once, as root or through sudo.
CHROMIUM := /usr/bin/chromium
# The observability tests check the alert rules with promtool and run a real Prometheus and
# Alertmanager (Debian's packages; their services, if the package starts them, are not used).
PROMTOOL := /usr/bin/promtool
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

$(PROMTOOL):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq prometheus prometheus-alertmanager

# Spans go to the console (one JSON line each, beside the logs) unless told otherwise:
# `INSTOCK_TRACE_CONSOLE=false make run`, or INSTOCK_OTLP_ENDPOINT for a collector.
run: $(STAMP)
	INSTOCK_TRACE_CONSOLE=$${INSTOCK_TRACE_CONSOLE:-true} $(BIN)/instock serve --demo

test: $(STAMP) $(CHROMIUM) $(PROMTOOL)
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) instock.db .instock

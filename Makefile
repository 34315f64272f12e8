# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean

demo: $(VENV)/.installed
	$(PY) -m inventory demo

test: $(VENV)/.installed
	$(PY) -m ruff check inventory tests benchmarks
	$(PY) -m ruff format --check inventory tests benchmarks
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info demo.db demo.db-wal demo.db-shm

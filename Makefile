# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: pip takes the CPU wheel on disk instead of pulling a multi-GB CUDA build.
# (A GPU host installs its CUDA build of torch here instead.)
TORCH ?= torch==2.13.0

.PHONY: setup data demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

data: setup
	$(VENV)/bin/trainhost sample-data

demo: setup data
	$(VENV)/bin/trainhost demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) var logs build *.egg-info

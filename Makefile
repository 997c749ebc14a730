# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: pip takes the CPU wheel on disk instead of pulling a multi-GB CUDA build.
# (A GPU host installs its CUDA build of torch here instead.)
TORCH ?= torch==2.13.0

.PHONY: setup data demo test lint bench clean browser

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

# Debian's headless chromium and its driver for the browser tests (nothing is downloaded at test
# time). Skipped when both are there; without root the browser tests are skipped instead.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends chromium chromium-driver; \
	else echo "chromium/chromium-driver missing and not root: the browser tests will be skipped"; fi

test: setup browser
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

# Benchmarks against baselines measured in the same run; appends to bench/RESULTS.md (bench/gpu.sh on a GPU host).
bench: setup
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m bench

clean:
	rm -rf $(VENV) var logs build *.egg-info

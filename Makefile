# Two commands for a newcomer: `make demo` and `make test` (both set up first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# tcmalloc makes XLA's per-step scratch allocations much cheaper on CPU (DESIGN.md).
TCMALLOC := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4))
RUN := $(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC)) $(PY)
DEMO_DIR ?= runs/demo
PYTEST_ARGS ?=

.PHONY: setup sysdeps demo test test-slow clean-demo

setup: $(VENV)/.installed sysdeps

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

sysdeps:
	@bash launch/install_system_packages.sh

demo: setup
	$(RUN) -m alp_jax.demo --out $(DEMO_DIR)

test: setup
	$(RUN) -m pytest -q -m "not slow" tests $(PYTEST_ARGS)

test-slow: setup
	$(RUN) -m pytest -q -m slow tests $(PYTEST_ARGS)

clean-demo:
	rm -rf $(DEMO_DIR)

# Two commands for a newcomer: `make demo` and `make test`. Both set up the venv first; only the demo also
# installs the system packages it needs (sysdeps), so the tests never run apt-get (tests that need them skip).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# tcmalloc makes XLA's per-step scratch allocations much cheaper on CPU (README: Speed notes for CPU).
# Looked up when a recipe runs (`=`), so a tcmalloc that sysdeps has just installed is used by that same `make demo`.
TCMALLOC = $(firstword $(shell ls /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 2>/dev/null))
RUN = $(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC)) $(PY)
DEMO_DIR ?= runs/demo
PYTEST_ARGS ?=
# `make test` runs the suite in this many pytest-xdist worker processes, one test file per worker at a time (module
# fixtures stay in one process); 0 runs it in one process. Two fit a 2-core machine: most tests are compile-bound.
TEST_WORKERS ?= 2
# The jax build: unset (CPU, what requirements.txt pins), cuda12 (NVIDIA GPUs) or tpu (TPU VMs).
ALP_ACCELERATOR ?=
ACCEL := $(or $(ALP_ACCELERATOR),cpu)
STAMP := $(VENV)/.installed-$(ACCEL)

.PHONY: setup venv sysdeps demo study demo-recipe test test-slow test-wheel lock clean-demo

# Everything the demo needs: the venv and the system packages.
setup: venv sysdeps

venv: $(STAMP)

# The exact locked versions (runtime + tensorboard, tfds, sed and test extras), then the accelerator's jax build at
# the locked jax version, then this checkout itself (editable, no dependency resolution).
$(STAMP): requirements.txt pyproject.toml
	@case "$(ACCEL)" in cpu|cuda12|tpu) ;; *) echo "ALP_ACCELERATOR must be cuda12 or tpu (or unset for CPU), not '$(ACCEL)'" >&2; exit 2;; esac
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(if $(filter-out cpu,$(ACCEL)),$(PY) -m pip install -q -c requirements.txt "jax[$(ACCEL)]")
	$(PY) -m pip install -q --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

# Regenerates requirements.txt from pyproject.toml with uv in a throwaway venv (versions already in the lock are
# kept unless a range excludes them; LOCK_ARGS=--upgrade moves everything to the newest allowed).
LOCK_ARGS ?=
lock:
	@test -x /tmp/alp-uv/bin/uv || ($(PYTHON) -m venv /tmp/alp-uv && /tmp/alp-uv/bin/pip install -q uv)
	/tmp/alp-uv/bin/uv pip compile pyproject.toml --python-version 3.11 --extra tensorboard --extra tfds \
	    --extra sed --extra test -o requirements.txt $(LOCK_ARGS)

# Installs missing system packages with apt-get when root (else prints the apt-get line and fails if a required
# one is missing); never a dependency of the test targets.
sysdeps:
	@bash launch/install_system_packages.sh

# The miniature study (configs/sweeps/mini.py) on the demo corpus: corpus, tasks, sweep, report.
demo: $(STAMP) sysdeps
	$(RUN) -m alp_jax.demo --out $(DEMO_DIR)

# Its larger grid (mini.py:study: two seeds, longer budgets, attention pooling, log-mel baseline), same corpus.
study: $(STAMP) sysdeps
	$(RUN) -m alp_jax.demo --out $(DEMO_DIR) --sweep alp_jax.configs.sweeps.mini:study

# The reference small-scale recipe's two runs (2000 steps each) compared in depth: both baselines, zero-shot,
# retrieval and captioning (docs/representation.md).
demo-recipe: $(STAMP) sysdeps
	$(RUN) -m alp_jax.demo --out $(DEMO_DIR) --stage recipe

test: $(STAMP)
	$(RUN) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile tests $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(RUN) -m pytest -q -m slow tests $(PYTEST_ARGS)

# The wheel in a fresh venv, outside the checkout: alp-train --help, a tiny training run, alp-export, embed.
test-wheel: $(STAMP)
	$(RUN) -m pytest -q -m slow tests/test_wheel.py $(PYTEST_ARGS)

clean-demo:
	rm -rf $(DEMO_DIR)

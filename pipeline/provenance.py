"""Provenance: what made a result (code, libraries, platform, resolved params).

Two kinds, kept apart so that identical work gives identical bytes:
- ``code_fingerprint()``: a hash of the pipeline's source files, part of every run's
  fingerprint, so a checkpoint made by other code is never resumed;
- ``provenance()``: volatile facts (git SHA with a dirty flag, host platform, library
  versions), written to its own small file and never into weights or headline metrics.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

_PACKAGES = ("torch", "torchvision", "webdataset", "scikit-learn", "numpy", "dvc", "dvclive")
PACKAGE_ROOT = Path(__file__).resolve().parent  # pipeline/


def code_fingerprint(*extra_files: str | Path) -> str:
    """sha256 of every ``.py`` file of the ``pipeline`` package (by relative path and
    content) plus ``extra_files`` (e.g. the stage script). Any code change, even a comment,
    changes it: resuming after a code change could mix two versions of the code in one
    result, so the conservative answer is a fresh run."""
    h = hashlib.sha256()
    files = sorted(PACKAGE_ROOT.rglob("*.py")) + [Path(f).resolve() for f in extra_files]
    for path in files:
        name = path.relative_to(PACKAGE_ROOT.parent) if path.is_relative_to(PACKAGE_ROOT.parent) else path.name
        h.update(str(name).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def git_revision() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(params: dict | None = None, **extra) -> dict:
    """Code version, library versions, platform and the resolved params."""
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"git": git_revision(), "code": code_fingerprint(), "python": platform.python_version(),
            "platform": platform.platform(), "packages": versions, "params": params, **extra}

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


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver's version (e.g. "580.65.06") from nvidia-smi; None without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.split()
        return out[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_info(device, precision: str) -> dict:
    """What trained: the device (GPU name and compute capability, CUDA runtime of the torch
    build, the driver's CUDA version and NVIDIA driver version on a GPU) and the precision
    (bf16 | fp16 | fp32). For provenance.json and the timing file, not the metrics."""
    import torch

    from pipeline.train.device import driver_cuda_version

    info = {"device": str(device), "precision": precision, "torch_cuda": torch.version.cuda}
    if getattr(device, "type", str(device)) == "cuda":
        props = torch.cuda.get_device_properties(device)
        driver_cuda = driver_cuda_version()
        info |= {"gpu": props.name, "gpu_count": torch.cuda.device_count(), "capability": f"{props.major}.{props.minor}",
                 "gpu_memory_gib": round(props.total_memory / 2**30, 1), "cudnn": torch.backends.cudnn.version(),
                 "driver_cuda": f"{driver_cuda // 1000}.{driver_cuda % 1000 // 10}" if driver_cuda else None,
                 "nvidia_driver": nvidia_driver_version()}
    else:
        info["cpu"] = _cpu_model()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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

"""The training device and precision: chosen by params, refused early and plainly when absent.

``device: auto`` takes CUDA when torch can use it and the CPU otherwise, and says which (a
host whose driver does not match the pinned CUDA build of torch would otherwise train on
the CPU unnoticed). ``device: cuda`` without a usable GPU is a ``UserError`` naming the
reason (CPU-only build of torch, no NVIDIA driver, a driver too old for this build, no
device visible) and the fix, raised before any work.

``precision: auto`` is bfloat16 autocast where the GPU supports it, float16 autocast with a
gradient scaler on older GPUs, and float32 on the CPU (the CPU default's results stay
bit-identical); ``bf16`` / ``fp16`` / ``fp32`` force one (CPU autocast takes bf16 and fp16).
"""

from __future__ import annotations

import ctypes
import os
import warnings

import torch

from pipeline.errors import UserError

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def driver_cuda_version() -> int | None:
    """The CUDA version the installed NVIDIA driver supports (e.g. 12040 for 12.4), asked
    from the driver library itself; None when no driver library loads."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value


def _as_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def cuda_unavailable_reason(build: str | None, driver: int | None, torch_warning: str = "",
                            key: str = "pretrain.device") -> str:
    """Why torch cannot use CUDA, and the fix, in one line. ``build``: ``torch.version.cuda``
    (None for a CPU-only build); ``driver``: ``driver_cuda_version()``; ``torch_warning``:
    what torch warned while probing, if anything."""
    if build is None:
        return (f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA build of torch "
                f"(constraints.txt pins one; the container image has it) or set {key}: cpu")
    if driver is None:
        return (f"no NVIDIA driver found (libcuda.so.1 does not load) for this CUDA {build} build of torch; on a GPU host "
                f"install the NVIDIA driver, in a container run it with --gpus all, or set {key}: cpu")
    major, minor = (int(x) for x in build.split(".")[:2])
    if driver < major * 1000 + minor * 10:
        return (f"the NVIDIA driver is too old: it supports CUDA {_as_version(driver)} and this torch is built for CUDA "
                f"{build}; upgrade the driver (CUDA 13 needs the 580 series or newer) or install the torch build for "
                f"CUDA {_as_version(driver)} (the container's CUDA build argument), or set {key}: cpu")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    detail = f" ({torch_warning.strip()})" if torch_warning else ""
    hint = f"CUDA_VISIBLE_DEVICES={visible!r} hides them; " if visible is not None else ""
    return f"no CUDA device is visible{detail}; {hint}check nvidia-smi, or set {key}: cpu"


def _cuda_probe() -> tuple[bool, str]:
    """``torch.cuda.is_available()`` and the warning torch gives when it is not."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = torch.cuda.is_available()
    return ok, "; ".join(str(w.message) for w in caught)


def pick_device(setting: str = "auto", key: str = "pretrain.device") -> torch.device:
    """The device for ``setting`` (auto | cuda | cpu); ``cuda`` without a usable GPU raises
    ``UserError`` with the reason and the fix."""
    if setting not in DEVICES:
        raise UserError(f"{key}: {setting!r} is not one of {', '.join(DEVICES)}")
    if setting == "cpu":
        return torch.device("cpu")
    ok, warning = _cuda_probe()
    if ok:
        return torch.device("cuda", torch.cuda.current_device())
    if setting == "cuda":
        raise UserError(f"{key}: cuda, but CUDA is not usable: "
                        + cuda_unavailable_reason(torch.version.cuda, driver_cuda_version(), warning, key))
    return torch.device("cpu")


def why_cpu() -> str:
    """For ``auto``'s message when it chose the CPU: why CUDA was not taken."""
    ok, warning = _cuda_probe()
    return "" if ok else cuda_unavailable_reason(torch.version.cuda, driver_cuda_version(), warning).split(";")[0]


def resolve_precision(setting: str, device: torch.device, key: str = "pretrain.precision") -> str:
    """``auto`` -> bf16 on a GPU that supports it, fp16 (with a gradient scaler) on one that
    does not, fp32 on the CPU; an explicit choice is kept (bf16 on a GPU without it is refused)."""
    if setting not in PRECISIONS:
        raise UserError(f"{key}: {setting!r} is not one of {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    if setting == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if setting == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UserError(f"{key}: bf16, but {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                        f"set {key}: fp16 (float16 with a gradient scaler) or auto")
    return setting

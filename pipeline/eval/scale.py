"""Sizes an evaluation cannot finish, refused before any work (``UserError``, exit 2).

From the manifest's split counts, the feature dimension and the device, each frozen-feature
protocol's largest allocations and its slowest solver are estimated; an estimate over what
the host or device has (memory, the feature cache's disk) or over ``MAX_HOURS`` names the
param that fixes it. The estimates are deliberately simple (bytes of the arrays a protocol
holds; floating-point operations at a stated rate), stated in the message, and generous: they
refuse sizes that would fail or run for days, not ones that merely run long.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.eval.algorithms.linear import SKLEARN_MAX_ELEMENTS, resolve_backend

GIB = 2**30
MAX_HOURS = 12.0  # a DVC stage estimated to take longer than this is refused (its fix is named)
SKLEARN_FLOPS = 2e10  # scikit-learn's float64 L-BFGS on a CPU host (generous: a few cores' BLAS)
FEATURE_PROTOCOLS = ("linear_eval", "knn", "few_shot", "label_efficiency")  # read the split features


def host_memory() -> int:
    """Bytes of host memory available now (psutil), what the CPU solvers may allocate."""
    import psutil

    return psutil.virtual_memory().available


def device_memory(device: torch.device) -> int:
    """Bytes free on ``device`` (the host's available memory for the CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return host_memory()


def _count(manifest: dict, *splits: str) -> int:
    return sum(int(manifest["splits"][s]["count"]) for s in splits)


def _refuse(what: str, need: float, have: float, unit: str, fix: str) -> None:
    if need > have:
        raise UserError(f"{what}: needs about {need:,.1f} {unit} but {have:,.1f} {unit} are available; {fix}")


def check_scale(protocol: str, params: Params, manifest: dict, dim: int, device: torch.device, cache: str | None) -> None:
    """Refuse ``protocol`` on these shards (features ``[N, dim]``) if an estimate says it cannot finish."""
    if protocol not in FEATURE_PROTOCOLS:
        return  # fine-tuning, the SGD probe, diagnostics and transfer stream batches: memory bounded by batch params
    splits = ("train", "val", "test") if protocol in ("linear_eval", "label_efficiency") else ("train", "test")
    if protocol == "few_shot":
        splits = ("test",)
    n_all = _count(manifest, *splits)
    bytes_per = 2 if device.type == "cuda" else 4  # the cache's float16 / float32
    if cache is not None:
        root = Path(cache)
        while not root.exists():
            root = root.parent
        _refuse(f"{protocol}: the feature cache of [{n_all:,}, {dim}] features in {cache}", n_all * dim * bytes_per / GIB,
                shutil.disk_usage(root).free / GIB, "GiB of disk", "free disk space or give stages/evaluate.py "
                "--feature-cache a folder on a larger disk")
    else:
        _refuse(f"{protocol}: [{n_all:,}, {dim}] features held in memory", n_all * dim * 4 / GIB, host_memory() / GIB,
                "GiB", "use a feature cache folder (stages/evaluate.py --feature-cache) or lower data.train_size")
    n_classes = len(manifest["classes"])
    if protocol == "knn":
        n = _count(manifest, "train")
        _refuse(f"knn: the bank of [{n:,}, {dim}] normalised features on {device.type}", n * dim * bytes_per / GIB,
                device_memory(device) / GIB, "GiB", "lower data.train_size (the bank is the train split)")
    if protocol in ("linear_eval", "label_efficiency"):
        linear_eval = params.protocol_params["linear_eval"]
        cfg = params.protocol_params[protocol]  # c_grid and max_iter: each protocol's own
        backend = linear_eval.backend if protocol == "linear_eval" else "auto"
        n_fit = _count(manifest, "train", "val")
        if protocol == "label_efficiency":
            n_fit = int(n_fit * max(cfg.fractions)) + 1
        n_sweep = min(_count(manifest, "train"), linear_eval.sweep_size)
        if resolve_backend(backend, n_fit, dim, device) == "sklearn":
            # StandardScaler's float64 copy, the solver's float64 copy and its [N, K] probabilities
            _refuse(f"{protocol}: scikit-learn's float64 probe on [{n_fit:,}, {dim}]", (2 * n_fit * dim + 2 * n_fit * n_classes) * 8 / GIB,
                    host_memory() / GIB, "GiB", "set linear_eval.backend: torch (fits on the device in float32)")
            fits = len(cfg.c_grid) * n_sweep + n_fit  # one L-BFGS path over the sweep, then the refit on all
            hours = cfg.max_iter * fits * dim * n_classes * 4 / SKLEARN_FLOPS / 3600
            _refuse(f"{protocol}: scikit-learn's probe ({cfg.max_iter} iterations x {len(cfg.c_grid)} C values, "
                    f"{n_classes} classes, at {SKLEARN_FLOPS:.0e} flop/s)", hours, MAX_HOURS, "hours",
                    f"set linear_eval.backend: torch (auto picks it on CUDA and above {SKLEARN_MAX_ELEMENTS:.0e} train feature values), "
                    "or lower linear_eval.sweep_size / linear_eval.max_iter")
        else:
            # the features as float32 on the device, the logits and their gradient [N, K]
            _refuse(f"{protocol}: the torch probe on [{n_fit:,}, {dim}] float32 features on {device.type}",
                    (n_fit * dim + 3 * n_fit * n_classes) * 4 / GIB, device_memory(device) / GIB, "GiB",
                    "lower data.train_size (the final fit holds train + val on the device)")
    if protocol == "few_shot" and "logreg" in params.protocol_params["few_shot"].classifiers:
        fs = params.protocol_params["few_shot"]
        ways = [min(n_classes, fs.max_ways) if w == "all" else w for w in fs.ways]
        # one float64 L-BFGS fit per episode: ~100 iterations over [ways x shots, dim] x ways classes
        flops = sum(fs.episodes * 100 * 4 * (w * k) * dim * w for w in ways for k in fs.shots)
        _refuse(f"few_shot: {fs.episodes} episodes x {len(fs.shots)} shots x {len(ways)} ways of logistic regression "
                f"(at {SKLEARN_FLOPS:.0e} flop/s)", flops / SKLEARN_FLOPS / 3600, MAX_HOURS, "hours",
                "lower few_shot.max_ways or few_shot.episodes, or keep only prototype in few_shot.classifiers")

"""Distributed helpers that are safe without a process group (CPU tests, one GPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x [N, ...]`` from every rank in rank order -> ``[N * world, ...]``.

    Gradients flow back to each rank's own slice (torch.distributed.nn's all_gather), so a
    contrastive loss over gathered negatives equals the single-process loss.
    """
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def all_gather_object(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` without a process group). Tensors
    inside ``obj`` should be on the CPU: they are unpickled on the receiving rank."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (``obj`` itself without a process group)."""
    if world_size() == 1:
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def init_from_env() -> None:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs,
    gloo on CPUs. Each process takes the GPU of its LOCAL_RANK, before the group starts,
    so NCCL binds each rank to its own device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def shutdown() -> None:
    """End the process group (if any) so every rank exits without NCCL/gloo teardown warnings."""
    if is_distributed():
        dist.destroy_process_group()


def relaunch_under_torchrun(nproc: int, script: str, tag: str) -> int:
    """Run ``script`` with this process's arguments again under ``torchrun --standalone``
    with ``nproc`` processes on this node, and return its exit status (a stage asked by a
    param for more than one process starts itself so; with one it runs in plain python:
    torchrun would only add a launcher process). A rank's error reaches the log from that
    rank; torchrun reports a failed rank with status 1."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", script, *sys.argv[1:]]
    print(f"[{tag}] {nproc} processes: {' '.join(cmd[1:])}", flush=True)
    return subprocess.call(cmd)


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def default_workers(requested: int | None) -> int:
    """``requested`` worker processes, or by default the cores this process may use shared by
    the processes torchrun started on this node (at least 1, at most 8)."""
    if requested is not None:
        return requested
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))

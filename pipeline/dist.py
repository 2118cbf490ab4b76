"""Distributed helpers that are safe without a process group (CPU tests, one GPU)."""

from __future__ import annotations

import os
import signal
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
    with ``nproc`` processes on this node, and return the exit status for this process (a
    stage asked by a param for more than one process starts itself so; with one it runs in
    plain python: torchrun would only add a launcher process).

    torchrun's agent runs in this process (``torch.distributed.run.run``, what the
    ``torchrun`` command calls), so a rank's user error ends here as that rank's one line and
    its status (2, or 130 for Ctrl-C) instead of torchrun's ``ChildFailedError`` traceback and
    status 1: the ranks leave their line in a folder (``errors.RANK_ERRORS_ENV``) and this
    process prints the lowest rank's once. A rank that crashed (a bug) printed its own
    traceback; this process then exits 1 with one line saying so."""
    import logging
    import tempfile

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from pipeline.errors import RANK_ERRORS_ENV, rank_error

    argv = ["--standalone", f"--nproc-per-node={nproc}", script, *sys.argv[1:]]
    print(f"[{tag}] {nproc} processes: torch.distributed.run {' '.join(argv)}", flush=True)
    # the agent logs a failed rank as an error with its own summary: the line printed below says it once
    # (a logger's filter is not inherited by its children: set on the logger that writes it)
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(
        lambda record: "failed (exitcode" not in str(record.msg))
    with tempfile.TemporaryDirectory(prefix="ssl-rank-errors-") as folder:
        os.environ[RANK_ERRORS_ENV] = folder
        try:
            run(parse_args(argv))
            return 0
        except ChildFailedError as err:
            left = rank_error(folder)
            if left is None:  # a crash: the rank printed its traceback above
                rank, failure = err.get_first_failure()
                print(f"error: [{tag}] rank {rank} failed with exit status {failure.exitcode} (its traceback is above)",
                      file=sys.stderr, flush=True)
                return 1
            status, message = left
            print(f"error: {message}", file=sys.stderr, flush=True)
            return status
        except SignalException as err:  # Ctrl-C or a kill reached the agent: it stopped every rank
            if err.sigval == signal.SIGINT:
                raise KeyboardInterrupt from None
            raise
        finally:
            os.environ.pop(RANK_ERRORS_ENV, None)


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def default_workers(requested: int | None) -> int:
    """``requested`` worker processes, or by default the cores this process may use shared by
    the processes torchrun started on this node (at least 1, at most 8)."""
    if requested is not None:
        return requested
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))

"""Run a function on every rank of a real process group: ``WORLD`` processes (spawned, not
threads) joined over gloo, each with one torch thread."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp

WORLD = 2


def _rank_main(fn, rank: int, init_file: str, out: str, args: tuple) -> None:
    """One process: join the group, save ``fn(rank, out, *args)`` as rank<r>.pt (or the
    traceback as rank<r>.error), leave the group."""
    try:
        torch.set_num_threads(1)
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
        torch.save(fn(rank, out, *args), Path(out) / f"rank{rank}.pt")
    except BaseException:
        (Path(out) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def spawn(fn, tmp_path: Path, *args, timeout: float) -> list:
    """``[fn(0, out, *args), fn(1, out, *args), ...]``, each computed in its own rank's
    process (``fn`` must be importable: a module-level function). Fails on a timeout (the
    processes killed: a rank blocked in a collective) or on any rank's error, with its traceback."""
    ctx = mp.get_context("spawn")
    init_file = tmp_path / "pg-init"
    procs = [ctx.Process(target=_rank_main, args=(fn, r, str(init_file), str(tmp_path), args)) for r in range(WORLD)]
    env = os.environ.copy()
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout)
    finally:
        os.environ.clear()
        os.environ.update(env)
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    errors = [(tmp_path / f"rank{r}.error").read_text() for r in range(WORLD) if (tmp_path / f"rank{r}.error").exists()]
    assert not hung, f"ranks {hung} still running after {timeout} s (blocked in a collective?)\n" + "\n".join(errors)
    assert not errors and all(p.exitcode == 0 for p in procs), "\n".join(errors) or [p.exitcode for p in procs]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]

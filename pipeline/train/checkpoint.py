"""Resumable checkpoints: written atomically, loaded safely, tied to the run that made them.

A checkpoint holds only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``: a crafted file cannot run code, and anything that is not
a checkpoint of ours is refused with a message saying what to do. It is resumed only when
its fingerprint (method, resolved params, shard hashes, code) matches the new run's and the
run it belongs to had not finished: a finished run's checkpoint is never taken as the result
of a new one (``dvc repro -f`` trains from scratch).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from pipeline.errors import UserError
from pipeline.outputs import replace_atomically, save_torch

FORMAT = "ssl-pipeline-checkpoint/3"  # 3: per-rank RNG and extra state ("ranks"), world size


def fingerprint(*parts) -> str:
    """Stable hash of JSON-able parts (resolved params, shard hashes, code fingerprint)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save(path: Path, state: dict) -> None:
    """``state`` must hold only tensors, containers and plain values (weights_only-loadable)."""
    replace_atomically(path, lambda tmp: save_torch({"format": FORMAT, **state}, tmp))


def _refuse(path: Path, found: str) -> UserError:
    return UserError(f"{path} is not a checkpoint this pipeline can resume ({found}); nothing was loaded from it. "
                     f"Delete it to train from scratch: rm {path}")


def load_resumable(path: Path | None, expected_fingerprint: str) -> dict | None:
    """The checkpoint at ``path`` if the same run (fingerprint) was interrupted there, else
    None (no file, another run's, or a finished run's). Raises ``UserError`` for a file that
    is not a readable checkpoint of ours: it is never unpickled with arbitrary code."""
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, foreign or crafted: all refused the same way
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise _refuse(path, f"unreadable: {first}") from None
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise _refuse(path, f"a {type(state).__name__} without a run fingerprint")
    if state.get("format") != FORMAT:
        return None  # an older version of this pipeline wrote it: start fresh
    if state.get("fingerprint") != expected_fingerprint or state.get("finished", True):
        return None
    return state

"""Resumable checkpoints, written atomically and tied to the params that made them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


def fingerprint(*parts) -> str:
    """Stable hash of JSON-able parts (resolved params, shard hashes)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # readers see the old or the new file, never half of one


def load_matching(path: Path | None, expected_fingerprint: str) -> dict | None:
    """The checkpoint at ``path`` if it exists and was made by the same params, else None."""
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint means start fresh
        return None
    return state if state.get("fingerprint") == expected_fingerprint else None

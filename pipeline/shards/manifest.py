"""A shard folder's ``manifest.json``: reading (with its checks), writing, and the one message
that says how to re-create a folder (its stage named from the manifest's modality).

The manifest records the folder's modality (``"modality"``, absent for images), the data
params it was made from (``"source"``), the classes, and per split its count, per-class
counts, each shard's sha256 and sample count (the writers' ``split_entry``,
``pipeline/shards/write.py``). Image manifests add the image size, channels,
format and the pretrain split's pixel statistics (``mean``/``std``, checked here when read).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from pipeline.errors import UserError

MANIFEST = "manifest.json"


def modality(manifest: dict) -> str:
    """The modality a shard folder holds: its manifest's ``"modality"``, "image" without one
    (image manifests predate the key)."""
    return manifest.get("modality", "image")


def shard_stage(manifest: dict) -> str:
    """The DVC stage that writes a folder of ``manifest``'s modality: ``shard`` for images,
    ``<modality>-shard`` for the others (``text-shard``)."""
    kind = modality(manifest)
    return "shard" if kind == "image" else f"{kind}-shard"


def recreate_hint(manifest: dict) -> str:
    """How to re-create the shard folder of ``manifest`` (``{}``: unknown, the image stage's)."""
    return f"re-create the shards with 'dvc repro -f {shard_stage(manifest)}'"


def write_manifest(out_dir: Path, manifest: dict) -> None:
    """``manifest.json``, written last and renamed into place: no manifest, no shards."""
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out_dir / MANIFEST)


def read_manifest(shard_dir: str | Path) -> dict:
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path} not found: the shards are missing or incomplete; run 'dvc repro shard'")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON ({err}); {recreate_hint({})}") from None
    _check_stats(path, manifest)
    return manifest


def _check_stats(path: Path, manifest: dict) -> None:
    """An image manifest's normalisation statistics: one finite number per channel, std >= 0
    (NaN here would surface much later as a non-finite loss, blamed on the learning rate)."""
    if modality(manifest) != "image":
        return
    channels = manifest.get("channels")
    for key in ("mean", "std"):
        values = manifest.get(key)
        ok = isinstance(values, list) and len(values) == (channels or len(values)) and all(
            isinstance(v, (int, float)) and math.isfinite(v) and (key == "mean" or v >= 0) for v in values)
        if not ok:
            raise UserError(f"{path}: '{key}' is {values!r}, not {channels or 'one per channel'} finite "
                            f"{'non-negative ' if key == 'std' else ''}number(s) (the pretrain images' statistics); "
                            f"{recreate_hint(manifest)}")

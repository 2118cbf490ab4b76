"""Params checked against the shards' manifest before an evaluation featurizes or trains.

``pipeline.config`` validates each key on its own; whether a value fits the data (k
neighbours in a bank of N images, K shots in the smallest test class, a label fraction
that leaves every class at least one image) is only known from the manifest. Without
these checks such values fail deep in a protocol after minutes of work, or worse, are
silently adjusted while the result still names the requested value.

Here are the checks every protocol shares (the classes of the labelled splits); each
protocol checks its own params in its ``check`` (``pipeline/eval/protocols/<name>.py``).
Each check raises ``UserError`` naming the key, the value, what the data allows and the fix.
"""

from __future__ import annotations

from pipeline.config import Params
from pipeline.errors import UserError
from pipeline.registry import PROTOCOLS

LABELLED = ("train", "val", "test")


def per_class(manifest: dict, split: str) -> dict[str, int]:
    """Classes of ``split`` that hold at least one image -> their count."""
    per_class = manifest["splits"].get(split, {}).get("per_class") or {}
    return {c: int(n) for c, n in per_class.items() if n > 0}


def check_classes(manifest: dict) -> None:
    """Every labelled split needs 2 classes: with one there is nothing to classify (and the
    probe's logistic regression refuses to fit)."""
    for split in LABELLED:
        present = per_class(manifest, split)
        if len(present) < 2:
            raise UserError(
                f"the {split} split holds {len(present)} class(es) {sorted(present)}: the linear probe needs at least "
                "2 classes (so do kNN, few-shot and fine-tuning); use a dataset with 2 or more labelled classes "
                "(data.source / data.root) and re-run the shard stage"
            )


def check_protocol_params(protocol: str, params: Params, manifest: dict) -> None:
    """Refuse params that do not fit the shards for a registered ``protocol``, before any
    featurizing or training: the classes every protocol needs, then the protocol's own checks."""
    check_classes(manifest)
    PROTOCOLS.get(protocol).check(params, manifest)

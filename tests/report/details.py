"""Writes the files the report reads, for the report tests."""

import json
from pathlib import Path


def write_details(metrics_dir: Path, protocol: str, name: str, result: dict) -> None:
    """``<metrics_dir>/<protocol>/<name>.details.json`` as an evaluation stage writes it: the
    protocol's result and a wall time, or a ``not_applicable`` record as it is."""
    (metrics_dir / protocol).mkdir(parents=True, exist_ok=True)
    details = result if "not_applicable" in result else {"result": result, "wall_seconds": 1.0}
    (metrics_dir / protocol / f"{name}.details.json").write_text(json.dumps(details))

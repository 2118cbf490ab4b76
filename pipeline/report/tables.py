"""Collect the metric files into one method-by-metric table (rows: encoders, columns:
metrics); the columns come from each registered protocol's ``summary``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.errors import UserError
from pipeline.registry import PROTOCOLS
from pipeline.eval.baselines import label, matching_random_init


def details_path(metrics_dir: Path, protocol: str, name: str) -> Path:
    """Where the evaluate stage writes a protocol's full results (dvc.yaml passes the same path)."""
    return metrics_dir / protocol / f"{name}.details.json"


def _read(path: Path, fix: str) -> dict:
    if not path.is_file():
        raise UserError(f"{path} is missing; run '{fix}'")
    return json.loads(path.read_text())


def load_results(metrics_dir: Path, params) -> tuple[dict[str, dict], dict[str, str]]:
    """``({encoder label: {protocol: full result}}, {method: its random-init label})``:
    every method's results, then every baseline's, in report order (``"result"`` of each
    details file). A protocol that does not apply to an encoder (fine-tuning raw pixels) is
    left out of its entry."""
    results = {}
    for m in params.methods:
        found = {p: _read(details_path(metrics_dir, p, m), f"dvc repro evaluate@{m}-{p}") for p in params.protocols}
        results[m] = {p: r["result"] for p, r in found.items()}
        results[m]["pretrain"] = _read(metrics_dir / "pretrain" / f"{m}.json", f"dvc repro pretrain@{m}")
    for b in params.baselines:
        found = {p: _read(details_path(metrics_dir, p, b), f"dvc repro baseline@{b}-{p}") for p in params.protocols}
        results[label(b)] = {p: r["result"] for p, r in found.items() if "result" in r}  # not "not_applicable"
    baseline_of = {}
    for m in params.methods:
        match = matching_random_init(params, m)
        if match:
            baseline_of[m] = label(match)
    return results, baseline_of


def summary_table(results: dict[str, dict]) -> pd.DataFrame:
    """One row per encoder label, one column per protocol summary value (fractions)."""
    rows = {}
    for name, by_protocol in results.items():
        row = {}
        for p in PROTOCOLS.names():  # report order
            if p in by_protocol:
                row |= PROTOCOLS.get(p).summary(by_protocol[p])
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def to_markdown(df: pd.DataFrame, percent: bool = True) -> str:
    """GitHub table; accuracies shown as percentages with one decimal, missing as '-'."""
    shown = df.map(lambda v: "-" if pd.isna(v) else (f"{100 * v:.1f}" if percent else f"{v:g}"))
    header = "| encoder | " + " | ".join(shown.columns) + " |"
    sep = "|---|" + "---:|" * len(shown.columns)
    lines = [header, sep] + [f"| {idx} | " + " | ".join(row) + " |" for idx, row in shown.iterrows()]
    return "\n".join(lines)

"""Collect metric files into one method-by-metric table (rows: encoders, columns: metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

STAGES = ("pretrain", "linear-eval", "finetune", "few-shot", "transfer", "label-efficiency", "diagnostics")
REQUIRED = ("pretrain", "linear-eval", "finetune", "few-shot", "transfer")


def load_method_metrics(metrics_dir: Path, method: str) -> dict[str, dict]:
    out = {}
    for stage in STAGES:
        path = metrics_dir / stage / f"{method}.json"
        if path.is_file():
            out[stage] = json.loads(path.read_text())
    return out


def few_shot_order(key: str) -> tuple[int, int]:
    """ "5way_10shot" -> (5, 10), so columns read 1, 5, 10 shots rather than string order."""
    ways, shots = key.split("way_")
    return int(ways), int(shots.removesuffix("shot"))


def _eval_row(linear_knn: dict, few_shot: dict, transfer: dict) -> dict:
    """few_shot: ``{classifier: {"5way_1shot": {mean, ci95}}}``; the table shows 5-way prototypes."""
    row = {"linear top-1": linear_knn["linear"]["top1"]}
    if "linear_sgd" in linear_knn:
        row["linear SGD top-1"] = linear_knn["linear_sgd"]["top1"]
    knn = sorted((int(k[3:-5]), v) for k, v in linear_knn.items() if k.startswith("knn"))  # "knn20_top1" -> 20
    row.update({f"kNN-{k} top-1": v for k, v in knn})
    protos = few_shot.get("prototype", {})
    five_way = sorted((k for k in protos if k.startswith("5way")), key=few_shot_order)
    row.update({f"few-shot {k.replace('way_', '-way ').replace('shot', '-shot')}": protos[k]["mean"] for k in five_way})
    row.update({f"transfer {name}": v["top1"] for name, v in transfer.items()})
    return row


def summary_table(metrics_dir: Path, methods: list[str], baselines: dict) -> pd.DataFrame:
    """One row per pretrained method and per baseline; accuracies as fractions."""
    rows = {}
    for m in methods:
        mm = load_method_metrics(metrics_dir, m)
        row = _eval_row(mm["linear-eval"], mm["few-shot"], mm["transfer"])
        row["finetune top-1"] = mm["finetune"]["top1"]
        rows[m] = row
    for name, label in (("random_init", "random init (baseline)"), ("raw_pixels", "raw pixels (baseline)")):
        b = baselines[name]
        rows[label] = _eval_row(b, b["few_shot"], b["transfer"])
    rows["random init (baseline)"]["finetune top-1"] = baselines["supervised_scratch"]["top1"]
    return pd.DataFrame.from_dict(rows, orient="index")


def to_markdown(df: pd.DataFrame, percent: bool = True) -> str:
    """GitHub table; accuracies shown as percentages with one decimal, missing as '-'."""
    shown = df.map(lambda v: "-" if pd.isna(v) else (f"{100 * v:.1f}" if percent else f"{v:g}"))
    header = "| encoder | " + " | ".join(shown.columns) + " |"
    sep = "|---|" + "---:|" * len(shown.columns)
    lines = [header, sep] + [f"| {idx} | " + " | ".join(row) + " |" for idx, row in shown.iterrows()]
    return "\n".join(lines)

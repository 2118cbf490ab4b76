"""reports/report.md: the method-by-metric table with verdicts against the baselines, the
pretraining table, then each registered protocol's own section, and the figures."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import Params
from pipeline.eval import registry
from pipeline.outputs import write_bytes
from pipeline.report import figures
from pipeline.report.tables import load_results, summary_table, to_markdown

RAW_LABEL = "raw pixels (baseline)"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def verdicts(results: dict[str, dict], baseline_of: dict[str, str]) -> list[str]:
    """One line per method: does its linear probe (and kNN-20) beat raw pixels and its own
    architecture at random init?"""
    def top1(name: str) -> float | None:
        return results.get(name, {}).get("linear_eval", {}).get("linear", {}).get("top1")

    def knn(name: str) -> float | None:
        return results.get(name, {}).get("knn", {}).get("knn20_top1")

    lines = []
    for m in (m for m in results if not m.endswith("(baseline)")):
        base = baseline_of.get(m, "")
        ours, raw, rnd = top1(m), top1(RAW_LABEL), top1(base)
        if ours is None:
            continue
        beats = all(b is None or ours > b for b in (raw, rnd))
        parts = [f"raw pixels {_pct(raw)}%", f"its own architecture at random init {_pct(rnd)}%" if rnd is not None else
                 "its own architecture at random init (not measured: add its random_init baseline to params.yaml)"]
        if knn(m) is not None and knn(base) is not None:
            parts[-1] += f" (kNN-20 {_pct(knn(base))}% vs {_pct(knn(m))}%)"
            beats = beats and knn(m) > knn(base)
        lines.append(f"- **{m}** linear top-1 {_pct(ours)}% {'beats' if beats else 'does NOT beat'} " + " and ".join(parts) + ".")
    return lines


def _timing(metrics_dir: Path, method: str) -> dict:
    """Wall time and throughput of pretraining (their own file: volatile, not a metric)."""
    path = metrics_dir / "pretrain" / f"{method}.timing.json"
    return json.loads(path.read_text()) if path.is_file() else {"wall_seconds": float("nan"), "images_per_second": float("nan")}


def _pretraining_table(results: dict, params: Params, metrics_dir: Path) -> list[str]:
    lines = ["## Pretraining", "", "| method | encoder | epochs | final loss | kNN-20 val monitor | wall time (s) | images/s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for m in params.methods:
        p, enc = results[m]["pretrain"] | _timing(metrics_dir, m), params.encoder_for(m)
        desc = f"{enc.arch} {list(enc.layers)} w{enc.width}" if enc.arch == "resnet" else f"vit p{enc.patch_size} d{enc.dim} x{enc.depth}"
        epochs = p.get("epochs", params.pretrain_for(m).epochs)
        lines.append(f"| {m} | {desc} | {epochs} | {p['loss']:.3f} | {_pct(p['knn_top1'])} | {p['wall_seconds']:.0f} | "
                     f"{p['images_per_second']:.0f} |")
    return lines + ["", "![training curves](figures/training_curves.png)", ""]


def _label_efficiency_curves(results: dict, baseline_of: dict) -> dict:
    """``{method: {fraction: {supervised, linear, finetune}}}`` with the 100% point from
    linear-eval and finetune, supervised from the method's random-init baseline."""
    out = {}
    for m, base in baseline_of.items():
        own, scratch = results[m], results.get(base, {})
        needed = ("label_efficiency", "linear_eval", "finetune")
        if any(p not in own for p in needed) or any(p not in scratch for p in ("label_efficiency", "finetune")):
            continue
        curve = {f: {"supervised": scratch["label_efficiency"][f]["finetune"], "linear": r["linear"], "finetune": r["finetune"]}
                 for f, r in own["label_efficiency"].items()}
        curve["1.0"] = {"supervised": scratch["finetune"]["top1"], "linear": own["linear_eval"]["linear"]["top1"],
                        "finetune": own["finetune"]["top1"]}
        out[m] = curve
    return out


def build_report(params: Params, manifest: dict, metrics_dir: Path, live_root: Path, out: Path, fig_dir: Path) -> str:
    """Write the report to ``out`` and its figures to ``fig_dir``; returns the markdown."""
    results, baseline_of = load_results(metrics_dir, params)
    df = summary_table(results)
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures.training_curves({m: live_root / m for m in params.methods}, fig_dir / "training_curves.png")
    figures.method_by_metric(df, fig_dir / "method_by_metric.png")
    fs = {name: r["few_shot"]["prototype"] for name, r in results.items() if "prototype" in r.get("few_shot", {})}
    figures.few_shot_curve(fs, fig_dir / "few_shot.png")
    le = _label_efficiency_curves(results, baseline_of)
    if le:
        figures.label_efficiency(le, fig_dir / "label_efficiency.png")

    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    n_labels = counts.get("train", 0) + counts.get("val", 0)
    lines = [
        "# Self-supervised pretraining report", "",
        f"Data: `{params.data.source}` at {manifest['image_size']}x{manifest['image_size']}x{manifest['channels']}, "
        f"splits {counts} (pretraining uses no labels).", "",
        "## Method by metric (top-1 %, test split)", "",
        "Baselines use the same splits and protocols. Every classifier saw the same labels: the "
        f"{n_labels:,} train+val images (the linear probe picks its L2 strength on val, then refits on both). The random-init "
        "rows' finetune column is supervised training from scratch (same recipe, full learning rate). Few-shot columns: "
        "5-way, nearest prototype.", "",
        to_markdown(df), "", *verdicts(results, baseline_of), "",
        *_pretraining_table(results, params, metrics_dir),
        "![method by metric](figures/method_by_metric.png)", "",
    ]
    for name in (n for n in registry.names() if n in params.protocols):
        lines += registry.get(name).section(results, baseline_of, params)
    maps = {m: r["diagnostics"]["embedding_map"] for m, r in results.items() if "embedding_map" in r.get("diagnostics", {})}
    if maps:
        figures.embedding_maps(maps, manifest["classes"], fig_dir / "embedding_map.png")
        lines += ["## 2-D map of test embeddings", "", "![embedding map](figures/embedding_map.png)", ""]
    text = "\n".join(lines)
    write_bytes(out, text.encode())
    return text

"""DVC stage `report`: reports/report.md and its figures from the committed metric files."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from pipeline.config import load_params
from pipeline.data.shards import read_manifest
from pipeline.errors import UserError, exit_on_user_error
from pipeline.outputs import StagedOutputs, write_bytes
from pipeline.report import figures
from pipeline.report.tables import REQUIRED, few_shot_order, load_method_metrics, summary_table, to_markdown


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _verdicts(df, metrics: dict[str, dict]) -> list[str]:
    raw = df.loc["raw pixels (baseline)", "linear top-1"]
    lines = []
    for m, mm in metrics.items():
        ours = df.loc[m, "linear top-1"]
        rnd = mm["linear-eval"].get("random_init", {}).get("linear", {}).get("top1")
        rnd_knn = mm["linear-eval"].get("random_init", {}).get("knn20_top1")
        parts = [f"raw pixels {_pct(raw)}%"]
        beats = ours > raw
        if rnd is not None:
            parts.append(f"its own architecture at random init {_pct(rnd)}% (kNN-20 {_pct(rnd_knn)}% vs {_pct(mm['linear-eval']['knn20_top1'])}%)")
            beats = beats and ours > rnd and mm["linear-eval"]["knn20_top1"] > rnd_knn
        lines.append(f"- **{m}** linear top-1 {_pct(ours)}% {'beats' if beats else 'does NOT beat'} " + " and ".join(parts) + ".")
    return lines


def _few_shot_section(fs: dict[str, dict], params) -> list[str]:
    lines = ["## Few-shot (mean % +- 95% CI)", ""]
    for clf in params.few_shot.classifiers:
        keys = sorted(next(iter(fs.values()))[clf], key=few_shot_order)
        lines += [f"Classifier: **{clf}**", "", "| encoder | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        for name, res in fs.items():
            lines.append(f"| {name} | " + " | ".join(f"{_pct(res[clf][k]['mean'])} +- {_pct(res[clf][k]['ci95'])}" for k in keys) + " |")
        lines.append("")
    lines.append(f"{params.few_shot.episodes} episodes per setting, {params.few_shot.queries} queries per class, seed {params.seed}; "
                 "every classifier sees the same episodes.")
    return lines + [""]


def _label_efficiency_section(le: dict[str, dict]) -> list[str]:
    lines = ["## Label efficiency (top-1 %, test split)", "",
             "Class-balanced fractions of the labelled train+val images, fixed seed. Supervised = the same encoder "
             "trained from scratch on those labels; linear = probe of the frozen SSL encoder; finetune = SSL encoder fine-tuned.", "",
             "| method | fraction | labels | supervised | linear | finetune |", "|---|---:|---:|---:|---:|---:|"]
    for m, res in le.items():
        for frac, r in res.items():
            lines.append(f"| {m} | {float(frac):g} | {r['n_labels']} | {_pct(r['supervised'])} | {_pct(r['linear'])} | {_pct(r['finetune'])} |")
    return lines + ["", "![label efficiency](figures/label_efficiency.png)", ""]


def _diagnostics_section(diag: dict[str, dict]) -> list[str]:
    lines = ["## Representation diagnostics (test images)", "",
             "| method | alignment (lower better) | uniformity (lower better) | effective rank / dim | std x sqrt(dim) | InfoNCE MI bound (nats) |",
             "|---|---:|---:|---:|---:|---:|"]
    for m, d in diag.items():
        lines.append(f"| {m} | {d['alignment']:.3f} | {d['uniformity']:.3f} | {d['effective_rank']:.1f} / {d['feature_dim']} | "
                     f"{d['std_sqrt_dim']:.3f} | {d['mi_lower_bound']:.2f} (K = {d['infonce_k']}, log K = {math.log(d['infonce_k']):.2f}) |")
    lines.append("")
    for m, d in diag.items():
        if d["collapsed"]:
            lines.append(f"> **WARNING: {m} has collapsed**: the per-dimension std of its normalised embedding x sqrt(dim) is "
                         f"{d['std_sqrt_dim']:.3f} (about 1 when healthy). Its other numbers are not meaningful.")
    return lines + [""]


def build_report(params_path: str, metrics_dir: Path, shards: str, live_root: Path, out: Path, fig_dir: Path | None = None) -> str:
    """Write the report to ``out`` and its figures to ``fig_dir`` (default: ``figures/`` beside
    it; the stage passes staged temporaries); returns the markdown."""
    params = load_params(params_path)
    manifest = read_manifest(shards)
    baselines_path = metrics_dir / "baselines.json"
    if not baselines_path.is_file():
        raise UserError(f"{baselines_path} missing; run 'dvc repro baselines'")
    baselines = json.loads(baselines_path.read_text())
    metrics = {m: load_method_metrics(metrics_dir, m) for m in params.methods}
    for m, mm in metrics.items():
        missing = set(REQUIRED) - set(mm)
        if missing:
            raise UserError(f"metrics of {sorted(missing)} for method {m!r} are missing under {metrics_dir}; run 'dvc repro'")
    df = summary_table(metrics_dir, params.methods, baselines)
    fig_dir = fig_dir or out.parent / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures.training_curves({m: live_root / m for m in params.methods}, fig_dir / "training_curves.png")
    figures.method_by_metric(df, fig_dir / "method_by_metric.png")
    fs = {m: mm["few-shot"] for m, mm in metrics.items()}
    fs |= {"random init": baselines["random_init"]["few_shot"], "raw pixels": baselines["raw_pixels"]["few_shot"]}
    figures.few_shot_curve({k: v["prototype"] for k, v in fs.items()}, fig_dir / "few_shot.png")

    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    lines = [
        "# Self-supervised pretraining report",
        "",
        f"Data: `{params.data.source}` at {manifest['image_size']}x{manifest['image_size']}x{manifest['channels']}, "
        f"splits {counts} (pretraining uses no labels).",
        "",
        "## Method by metric (top-1 %, test split)",
        "",
        "Baselines use the same splits and protocols (shared encoder config: "
        f"{params.encoder.arch}, layers {list(params.encoder.layers)}, width {params.encoder.width}). The random-init row's "
        "finetune column is supervised training from scratch with the same recipe. Few-shot columns: 5-way, nearest prototype.",
        "",
        to_markdown(df),
        "",
        *_verdicts(df, metrics),
        "",
        "## Pretraining",
        "",
        "| method | encoder | epochs | final loss | kNN-20 val monitor | wall time (s) | images/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for m, mm in metrics.items():
        p, enc = mm["pretrain"] | _timing(metrics_dir, m), params.encoder_for(m)
        desc = f"{enc.arch} {list(enc.layers)} w{enc.width}" if enc.arch == "resnet" else f"vit p{enc.patch_size} d{enc.dim} x{enc.depth}"
        lines.append(f"| {m} | {desc} | {p['epochs']} | {p['loss']:.3f} | {_pct(p['knn_top1'])} | {p['wall_seconds']:.0f} | {p['images_per_second']:.0f} |")
    lines += ["", "![training curves](figures/training_curves.png)", "", "![method by metric](figures/method_by_metric.png)", ""]
    lines += _few_shot_section(fs, params) + ["![few-shot](figures/few_shot.png)", ""]
    le = {m: mm["label-efficiency"] for m, mm in metrics.items() if "label-efficiency" in mm}
    if le:
        figures.label_efficiency(le, fig_dir / "label_efficiency.png")
        lines += _label_efficiency_section(le)
    diag = {m: mm["diagnostics"] for m, mm in metrics.items() if "diagnostics" in mm}
    if diag:
        lines += _diagnostics_section(diag)
    maps = {m: out.parent / "embeddings" / f"{m}.tsv" for m in params.methods if (out.parent / "embeddings" / f"{m}.tsv").is_file()}
    if maps:
        figures.embedding_maps(maps, manifest["classes"], fig_dir / "embedding_map.png")
        lines += ["## 2-D map of test embeddings", "", "![embedding map](figures/embedding_map.png)", ""]
    text = "\n".join(lines)
    write_bytes(out, text.encode())
    return text


def _timing(metrics_dir: Path, method: str) -> dict:
    """Wall time and throughput of pretraining (their own file: volatile, not a metric)."""
    path = metrics_dir / "pretrain" / f"{method}.timing.json"
    return json.loads(path.read_text()) if path.is_file() else {"wall_seconds": float("nan"), "images_per_second": float("nan")}


@exit_on_user_error
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--metrics-dir", default="metrics")
    ap.add_argument("--shards", required=True)
    ap.add_argument("--live-root", default="dvclive/pretrain")
    ap.add_argument("--out", default="reports/report.md")
    args = ap.parse_args()
    out = Path(args.out)
    with StagedOutputs() as staged:  # report and figures appear together, or not at all
        build_report(args.params, Path(args.metrics_dir), args.shards, Path(args.live_root), staged.file(out),
                     staged.dir(out.parent / "figures"))
    print(f"wrote {out} and {out.parent / 'figures'}/")


if __name__ == "__main__":
    main()

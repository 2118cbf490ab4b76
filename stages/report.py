"""DVC stage `report`: reports/report.md and its figures from the committed metric files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import load_params
from pipeline.data.shards import read_manifest
from pipeline.errors import UserError, exit_on_user_error
from pipeline.report import figures
from pipeline.report.tables import load_method_metrics, summary_table, to_markdown


def _verdict(df, method: str) -> str:
    ours = df.loc[method, "linear top-1"]
    raw = df.loc["raw pixels (baseline)", "linear top-1"]
    rnd = df.loc["random init (baseline)", "linear top-1"]
    beats = ours > raw and ours > rnd
    word = "beats" if beats else "does NOT beat"
    return (f"- **{method}** linear top-1 {100 * ours:.1f}% {word} both baselines "
            f"(raw pixels {100 * raw:.1f}%, random init {100 * rnd:.1f}%).")


def build_report(params_path: str, metrics_dir: Path, shards: str, live_root: Path, out: Path) -> str:
    params = load_params(params_path)
    manifest = read_manifest(shards)
    baselines_path = metrics_dir / "baselines.json"
    if not baselines_path.is_file():
        raise UserError(f"{baselines_path} missing; run 'dvc repro baselines'")
    baselines = json.loads(baselines_path.read_text())
    for m in params.methods:
        missing = {"pretrain", "linear-eval", "finetune", "few-shot", "transfer"} - set(load_method_metrics(metrics_dir, m))
        if missing:
            raise UserError(f"metrics of {sorted(missing)} for method {m!r} are missing under {metrics_dir}; run 'dvc repro'")
    df = summary_table(metrics_dir, params.methods, baselines)
    fig_dir = out.parent / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures.training_curves({m: live_root / m for m in params.methods}, fig_dir / "training_curves.png")
    figures.method_by_metric(df, fig_dir / "method_by_metric.png")
    fs = {m: load_method_metrics(metrics_dir, m)["few-shot"] for m in params.methods}
    fs |= {"random init": baselines["random_init"]["few_shot"], "raw pixels": baselines["raw_pixels"]["few_shot"]}
    figures.few_shot_curve(fs, fig_dir / "few_shot.png")

    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    lines = [
        "# Self-supervised pretraining report",
        "",
        f"Data: `{params.data.source}` at {manifest['image_size']}x{manifest['image_size']}x{manifest['channels']}, "
        f"splits {counts} (pretraining uses no labels). Encoder: ResNet layers {list(params.encoder.layers)}, "
        f"width {params.encoder.width}, stem stride {params.encoder.stem_stride}.",
        "",
        "## Method by metric (top-1 %, test split)",
        "",
        "Baselines use the same splits and protocols. The random-init row's finetune column is "
        "supervised training from scratch with the same recipe.",
        "",
        to_markdown(df),
        "",
        *[_verdict(df, m) for m in params.methods],
        "",
        "## Pretraining",
        "",
        "| method | epochs | final loss | kNN-20 val monitor | wall time (s) | images/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in params.methods:
        p = load_method_metrics(metrics_dir, m)["pretrain"]
        lines.append(f"| {m} | {p['epochs']} | {p['loss']:.3f} | {100 * p['knn_top1']:.1f} | {p['wall_seconds']:.0f} | {p['images_per_second']:.0f} |")
    lines += ["", "## Few-shot (nearest prototype, mean % +- 95% CI)", "", "| encoder | " + " | ".join(next(iter(fs.values()))) + " |",
              "|---|" + "---:|" * len(next(iter(fs.values())))]
    for name, res in fs.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * v['mean']:.1f} +- {100 * v['ci95']:.1f}" for v in res.values()) + " |")
    lines += ["", f"{params.few_shot.episodes} episodes per K, {params.few_shot.queries} queries per class, fixed seed {params.seed}.", "",
              "## Figures", "", "![training curves](figures/training_curves.png)", "",
              "![method by metric](figures/method_by_metric.png)", "", "![few-shot](figures/few_shot.png)", ""]
    text = "\n".join(lines)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return text


@exit_on_user_error
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--metrics-dir", default="metrics")
    ap.add_argument("--shards", required=True)
    ap.add_argument("--live-root", default="dvclive/pretrain")
    ap.add_argument("--out", default="reports/report.md")
    args = ap.parse_args()
    print(build_report(args.params, Path(args.metrics_dir), args.shards, Path(args.live_root), Path(args.out)))


if __name__ == "__main__":
    main()

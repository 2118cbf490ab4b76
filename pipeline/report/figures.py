"""The report's own figures (PNG): the pretraining curves and the method-by-metric bars. Each
protocol draws its own section's figures (``Protocol.figures``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.eval.plotting import plt, save


def training_curves(live_dirs: dict[str, Path], out: Path) -> None:
    """Loss, learning rate and kNN monitor for every method against the optimizer step (DVCLive TSVs:
    one point per epoch, logged at the step that ended it)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for method, live in live_dirs.items():
        for ax, key in zip(axes, ("loss", "lr", "knn_top1")):
            tsv = live / "plots" / "metrics" / f"{key}.tsv"
            if tsv.is_file():
                df = pd.read_csv(tsv, sep="\t")
                ax.plot(df["step"], df[key], marker="o", ms=3, label=method)
    for ax, title in zip(axes, ("pretraining loss", "learning rate", "kNN-20 top-1 (val monitor)")):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")  # DVCLive logs each epoch at the step that ended it
        ax.grid(alpha=0.3)
    axes[0].legend()
    save(fig, out)


def method_by_metric(df: pd.DataFrame, out: Path) -> None:
    """Grouped bars: each metric column, one bar per encoder (methods and baselines)."""
    ax = (100 * df.T).plot.bar(figsize=(max(8, 0.9 * len(df.columns)), 4), width=0.8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    plt.xticks(rotation=35, ha="right")
    save(ax.figure, out)

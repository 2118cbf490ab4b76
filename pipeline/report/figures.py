"""Report figures (PNG, matplotlib's non-interactive backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.eval.protocols.few_shot import few_shot_order  # noqa: E402

_META = {"Software": None}  # no version string in the PNG: same numbers, same bytes


def _save(fig, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=100, metadata=_META)
    plt.close(fig)


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
    _save(fig, out)


def method_by_metric(df: pd.DataFrame, out: Path) -> None:
    """Grouped bars: each metric column, one bar per encoder (methods and baselines)."""
    ax = (100 * df.T).plot.bar(figsize=(max(8, 0.9 * len(df.columns)), 4), width=0.8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    plt.xticks(rotation=35, ha="right")
    _save(ax.figure, out)


def few_shot_curve(results: dict[str, dict], out: Path) -> None:
    """Few-shot accuracy (with 95% CI) against K, one line per encoder."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, fs in results.items():
        ks = sorted((k for k in fs if k.startswith("5way")), key=few_shot_order)
        x = [few_shot_order(k)[1] for k in ks]
        ax.errorbar(x, [100 * fs[k]["mean"] for k in ks], yerr=[100 * fs[k]["ci95"] for k in ks], marker="o", capsize=3, label=name)
    ax.set_xlabel("shots per class (K)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("5-way few-shot, nearest prototype")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out)


def label_efficiency(results: dict[str, dict], out: Path, noun: str = "images") -> None:
    """Top-1 against label fraction (log x): supervised from scratch, linear probe, finetune."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method, res in results.items():
        fracs = sorted(res, key=float)
        x = [100 * float(f) for f in fracs]
        for arm, style in (("supervised", ":"), ("linear", "--"), ("finetune", "-")):
            label = arm if arm == "supervised" and len(results) == 1 else f"{method} {arm}"
            ax.plot(x, [100 * res[f][arm] for f in fracs], style, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel(f"labelled {noun} (% of train+val)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("label efficiency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out)


def embedding_maps(maps: dict[str, dict], classes: list[str], out: Path) -> None:
    """One scatter per encoder of its 2-D map (``{"method", "x", "y", "label"}``), coloured by class."""
    fig, axes = plt.subplots(1, len(maps), figsize=(4.5 * len(maps), 4.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], maps.items()):
        sc = ax.scatter(m["x"], m["y"], c=m["label"], cmap="tab10", s=3)
        ax.set_title(f"{name} ({m['method']})")
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(i))) for i in range(len(classes))]
    fig.legend(handles, classes, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    fig.savefig(out, dpi=100, metadata=_META)
    plt.close(fig)

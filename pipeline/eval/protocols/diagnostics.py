"""Representation diagnostics on test images (or text entries): alignment and uniformity of
two augmented views (text: two random maskings, ``pipeline.modalities.text.views``), effective
rank, collapse, an InfoNCE mutual-information bound; plus a 2-D map of the test embeddings
(t-SNE; UMAP where installed), drawn by the report."""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import Field

from pipeline import config
from pipeline.config import AugmentParams, Strict
from pipeline.eval.algorithms.diagnostics import diagnose
from pipeline.eval.algorithms.embedding_map import embedding_map
from pipeline.eval.protocol import EvalContext, Protocol, register, sample_noun


def views_for(ctx: EvalContext):
    """The two-view maker of the context's samples (``Modality.views``): image augmentations
    (``diagnostics.augment``), or for text, random maskings at ``text.view_mask_p``; seeded
    with the run's seed."""
    return ctx.modality.views(ctx.params, ctx.params.protocol_params["diagnostics"].augment, ctx.seed, ctx.device)


@register
class Diagnostics(Protocol):
    name = "diagnostics"
    order = 60
    needs_encoder = True

    class Params(Strict):
        images: int = Field(2000, ge=10)  # test images for the diagnostics and the 2-D map
        tsne: bool = True
        collapse_threshold: float = Field(0.1, gt=0)  # std * sqrt(dim) below this = collapsed
        augment: AugmentParams  # the views of the alignment/uniformity measures (params.yaml: the pretraining ones)

    def run(self, ctx: EvalContext) -> dict:
        cfg = ctx.params.protocol_params[self.name]
        images, labels = ctx.first("test", cfg.images)
        clean = ctx.featurize(images)  # the evaluations' features, for the diagnostics and the map
        result = diagnose(ctx.encoder, images, views_for(ctx), ctx.device,
                          collapse_threshold=cfg.collapse_threshold, clean=clean)
        note = ctx.modality.views_note(ctx.params)
        if note:
            result["views"] = note
        if cfg.tsne:
            result["embedding_map"] = embedding_map(clean, labels.numpy(), ctx.seed)
        return result

    def headline(self, result: dict) -> dict:
        keys = ("alignment", "uniformity", "effective_rank", "std_sqrt_dim", "mi_lower_bound")
        return {k: result[k] for k in keys} | {"collapsed": int(result["collapsed"])}

    def section(self, results: dict, baseline_of: dict, params: config.Params) -> list[str]:
        diag = {m: r[self.name] for m, r in results.items() if self.name in r}
        if not diag:
            return []
        lines = [f"## Representation diagnostics (test {sample_noun(params)})", "",
                 "| method | alignment (lower better) | uniformity (lower better) | effective rank / dim | std x sqrt(dim) | "
                 "InfoNCE MI bound (nats) |", "|---|---:|---:|---:|---:|---:|"]
        for m, d in diag.items():
            lines.append(f"| {m} | {d['alignment']:.3f} | {d['uniformity']:.3f} | {d['effective_rank']:.1f} / {d['feature_dim']} | "
                         f"{d['std_sqrt_dim']:.3f} | {d['mi_lower_bound']:.2f} (K = {d['infonce_k']}, log K = "
                         f"{math.log(d['infonce_k']):.2f}) |")
        lines.append("")
        views = next((d["views"] for d in diag.values() if "views" in d), None)
        if views:
            lines += [f"Views: {views}.", ""]
        for m, d in diag.items():
            if d["collapsed"]:
                lines.append(f"> **WARNING: {m} has collapsed**: the per-dimension std of its normalised embedding x sqrt(dim) "
                             f"is {d['std_sqrt_dim']:.3f} (about 1 when healthy). Its other numbers are not meaningful.")
        lines.append("")
        if any("embedding_map" in d for d in diag.values()):
            lines += ["## 2-D map of test embeddings", "", "![embedding map](figures/embedding_map.png)", ""]
        return lines

    def figures(self, results: dict, baseline_of: dict, params: config.Params, manifest: dict, out_dir: Path) -> None:
        maps = {m: r[self.name]["embedding_map"] for m, r in results.items() if "embedding_map" in r.get(self.name, {})}
        if maps:
            embedding_maps(maps, manifest["classes"], out_dir / "embedding_map.png")


def embedding_maps(maps: dict[str, dict], classes: list[str], out: Path) -> None:
    """One scatter per encoder of its 2-D map (``{"method", "x", "y", "label"}``), coloured by class."""
    from pipeline.eval.plotting import plt, save

    fig, axes = plt.subplots(1, len(maps), figsize=(4.5 * len(maps), 4.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], maps.items()):
        sc = ax.scatter(m["x"], m["y"], c=m["label"], cmap="tab10", s=3)
        ax.set_title(f"{name} ({m['method']})")
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(i))) for i in range(len(classes))]
    fig.legend(handles, classes, loc="center right", fontsize=7)
    save(fig, out, rect=(0, 0, 0.85, 1))

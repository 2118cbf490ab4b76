"""Label efficiency (SimCLR/BYOL's 1% / 10% tables): the linear probe and fine-tuning on
class-balanced fractions of the labelled set (train + val). Only fractions below 1: at 100%
these are the linear-eval and finetune protocols' own results, which the report shows
beside them. Run on the random-init baseline, the fine-tune arm is supervised training
from scratch on the same labels."""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import Field, field_validator

from pipeline import config
from pipeline.config import Strict
from pipeline.errors import UserError
from pipeline.eval.algorithms.finetune import FinetuneParams, top1, train_classifier
from pipeline.eval.algorithms.label_fractions import balanced_subset, rounded_count, smallest_fraction
from pipeline.eval.algorithms.linear import linear_probe
from pipeline.eval.checks import per_class
from pipeline.eval.protocol import EvalContext, Protocol, register, sample_noun


@register
class LabelEfficiency(Protocol):
    name = "label_efficiency"
    order = 50

    class Params(Strict):
        """Linear probe and fine-tuning on class-balanced label fractions (their own recipes:
        params.yaml aliases them to the linear_eval and finetune sections)."""

        fractions: list[float] = Field(default_factory=lambda: [0.01, 0.1], min_length=1)  # below 1: 100% is linear-eval/finetune
        min_steps: int = Field(100, ge=1)  # small fractions train for more epochs, at least this many steps
        c_grid: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0], min_length=1)
        max_iter: int = Field(200, ge=10)
        finetune: FinetuneParams

        @field_validator("fractions")
        @classmethod
        def _fractions(cls, v: list[float]) -> list[float]:
            if any(not 0 < f < 1 for f in v):
                raise ValueError("every fraction must be in (0, 1): the 100% results are the linear-eval and finetune protocols'")
            return v

    def check(self, params: config.Params, manifest: dict) -> None:
        """Each fraction must give every class of train and val at least 1 image by rounding
        (``label_fractions.rounded_count``); below that every class is raised to 1 image and the
        result would name a fraction that was not used (SimCLR-style "1% labels" must mean 1%)."""
        # The smallest class of train and val binds: a fraction that keeps it keeps every class.
        classes = [(n, split, c) for split in ("train", "val") for c, n in per_class(manifest, split).items()]
        if not classes:
            return  # check_classes reports it
        smallest, split, name = min(classes)
        for fraction in params.protocol_params[self.name].fractions:
            if rounded_count(fraction, smallest) < 1:
                raise UserError(
                    f"label_efficiency.fractions: {fraction:g} of the smallest {split} class ('{name}', {smallest} images) "
                    f"rounds to 0 images, so every class would get 1 image and the result would not be at {fraction:g}; "
                    f"use fractions of at least {smallest_fraction(smallest):g}, or more {split} images (data.{split}_size)"
                )

    def run(self, ctx: EvalContext) -> dict:
        le = ctx.params.protocol_params[self.name]
        ft = le.finetune
        (f_tr, y_tr), (f_va, y_va) = ctx.features("train"), ctx.features("val")
        out = {}
        for fraction in le.fractions:
            # the same labelled samples for both arms: a balanced subset of train (the probe's fit)
            # and of val (its C sweep); fine-tuning trains on their union
            tr_idx = balanced_subset(y_tr, fraction, ctx.seed)
            va_idx = balanced_subset(y_va, fraction, ctx.seed + 1)
            row = {"n_labels": int(len(tr_idx) + len(va_idx)),
                   "fraction_effective": (len(tr_idx) + len(va_idx)) / (len(y_tr) + len(y_va))}
            row["linear"] = linear_probe((f_tr[tr_idx], y_tr[tr_idx]), (f_va[va_idx], y_va[va_idx]), ctx.features("test"),
                                         le.c_grid, le.max_iter, seed=ctx.seed, device=ctx.device)["top1"]
            if ctx.encoder is not None:
                data = ctx.training_set(("train", "val"), ft.shuffle_buffer, ft.length_group,  # streamed: only the subset decoded
                                        keep={"train": tr_idx, "val": va_idx})
                n = data.count
                batch_size = min(ft.batch_size, max(2, n // 2))
                # at least min_steps optimizer steps, so 1% of the labels still trains for real
                epochs = max(ft.epochs, math.ceil(le.min_steps / max(1, n // batch_size)))
                cfg = ft.model_copy(update={"epochs": epochs, "batch_size": batch_size})
                mult = ft.encoder_lr_mult if ctx.pretrained else 1.0
                model, _ = train_classifier(ctx.trainable_encoder(), data, ctx.num_classes, cfg, mult, ctx.seed, ctx.device,
                                            f"label-eff {fraction:g} {ctx.name}")
                row["finetune"], row["epochs"] = top1(model, ctx.batches("test"), ctx.device), epochs
            out[str(fraction)] = row
        return out

    def headline(self, result: dict) -> dict:
        return {f"{arm}_{frac}": r[arm] for frac, r in result.items() for arm in ("linear", "finetune") if arm in r}

    def section(self, results: dict, baseline_of: dict, params: config.Params) -> list[str]:
        lines = ["## Label efficiency (top-1 %, test split)", "",
                 f"Class-balanced fractions of the labelled train+val {sample_noun(params)}, fixed seed. Supervised = the same "
                 "architecture trained from scratch on those labels (the fine-tune arm on its random init, at the full lr); linear = probe "
                 "of the frozen encoder; finetune = the pretrained encoder fine-tuned. The 100% rows are the linear-eval and "
                 f"finetune protocols (every labelled {sample_noun(params, plural=False)}).", "",
                 "| method | fraction | labels | supervised | linear | finetune |", "|---|---:|---:|---:|---:|---:|"]
        for m in (m for m in results if not m.endswith("(baseline)")):
            res, scratch = results[m], results.get(baseline_of.get(m, ""), {})
            for frac, r in res.get(self.name, {}).items():
                s = scratch.get(self.name, {}).get(frac, {}).get("finetune")
                lines.append(f"| {m} | {float(frac):g} | {r['n_labels']} | {_pct(s)} | {_pct(r['linear'])} | {_pct(r.get('finetune'))} |")
            if "linear_eval" in res and "finetune" in res:
                s = scratch.get("finetune", {}).get("top1")
                lines.append(f"| {m} | 1 | {res['finetune']['n_labels']} | {_pct(s)} | {_pct(res['linear_eval']['linear']['top1'])} | "
                             f"{_pct(res['finetune']['top1'])} |")
        return lines + ["", "![label efficiency](figures/label_efficiency.png)", ""]

    def figures(self, results: dict, baseline_of: dict, params: config.Params, manifest: dict, out_dir: Path) -> None:
        curves = self._curves(results, baseline_of)
        if curves:
            label_efficiency_curve(curves, out_dir / "label_efficiency.png", sample_noun(params))

    def _curves(self, results: dict, baseline_of: dict) -> dict:
        """``{method: {fraction: {supervised, linear, finetune}}}`` with the 100% point from
        linear-eval and finetune, supervised from the method's random-init baseline."""
        out = {}
        for m, base in baseline_of.items():
            own, scratch = results[m], results.get(base, {})
            needed = (self.name, "linear_eval", "finetune")
            if any(p not in own for p in needed) or any(p not in scratch for p in (self.name, "finetune")):
                continue
            curve = {f: {"supervised": scratch[self.name][f]["finetune"], "linear": r["linear"], "finetune": r["finetune"]}
                     for f, r in own[self.name].items()}
            curve["1.0"] = {"supervised": scratch["finetune"]["top1"], "linear": own["linear_eval"]["linear"]["top1"],
                            "finetune": own["finetune"]["top1"]}
            out[m] = curve
        return out


def label_efficiency_curve(results: dict[str, dict], out: Path, noun: str = "images") -> None:
    """Top-1 against label fraction (log x): supervised from scratch, linear probe, finetune."""
    from pipeline.eval.plotting import plt, save

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
    save(fig, out)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"

"""Label efficiency (SimCLR/BYOL's 1% / 10% tables): the linear probe and fine-tuning on
class-balanced fractions of the labelled set (train + val). Only fractions below 1: at 100%
these are the linear-eval and finetune protocols' own results, which the report shows
beside them. Run on the random-init baseline, the fine-tune arm is supervised training
from scratch on the same labels."""

from __future__ import annotations

import math

from pipeline import config
from pipeline.config import LabelEfficiencyParams
from pipeline.eval.checks import check_label_efficiency
from pipeline.eval.algorithms.finetune import top1, train_classifier
from pipeline.eval.algorithms.label_fractions import balanced_subset
from pipeline.eval.algorithms.linear import linear_probe
from pipeline.eval.protocol import EvalContext, Protocol, register, sample_noun
from pipeline.eval.protocols.finetune import labelled_set


@register
class LabelEfficiency(Protocol):
    name = "label_efficiency"
    Params = LabelEfficiencyParams
    order = 50

    def check(self, params: config.Params, manifest: dict) -> None:
        check_label_efficiency(params, manifest)

    def run(self, ctx: EvalContext) -> dict:
        le = ctx.params.label_efficiency
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
                data = labelled_set(ctx, ft, keep={"train": tr_idx, "val": va_idx})  # streamed: only the subset decoded
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


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"

"""reports/report.md: the method-by-metric table with verdicts against the baselines, the
pretraining table (and, for text, the held-out language-modelling numbers), then each
registered protocol's own section, and the figures. Images and text (a manifest with
``"modality": "text"``) share every part; only the wording and the features baseline differ."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import Params
from pipeline.registry import PROTOCOLS
from pipeline.eval.baselines import feature_baselines, features_baseline
from pipeline.eval.protocol import sample_noun
from pipeline.modalities.base import modality_of
from pipeline.outputs import write_bytes
from pipeline.report import figures
from pipeline.report.tables import load_results, summary_table, to_markdown

LM_KEYS = ("masked_accuracy", "perplexity", "unigram_perplexity")  # metrics/pretrain/<method>.json of text methods


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def verdicts(results: dict[str, dict], baseline_of: dict[str, str], features: str = "raw_pixels") -> list[str]:
    """One line per method: does its first verdict number (``Protocol.verdict``, in report order:
    the linear probe's top-1) beat the features-only baseline ``features`` (``raw_pixels``;
    ``tfidf`` for text) and its own architecture at random init, and do the later ones (kNN-20)
    beat the random init too?"""
    features_label, features_name = feature_baselines()[features].label, feature_baselines()[features].short

    def scores(name: str) -> dict[str, float]:
        """``{label: accuracy}`` of encoder ``name``'s verdict numbers, in report order."""
        by_protocol = results.get(name, {})
        found = (PROTOCOLS.get(p).verdict(by_protocol[p]) for p in PROTOCOLS.names() if p in by_protocol)
        return dict(v for v in found if v is not None)

    lines = []
    for m in (m for m in results if not m.endswith("(baseline)")):
        base = baseline_of.get(m, "")
        own, raw_scores, rnd_scores = scores(m), scores(features_label), scores(base)
        if not own:
            continue
        claim, *others = own
        ours, raw, rnd = own[claim], raw_scores.get(claim), rnd_scores.get(claim)
        beats = all(b is None or ours > b for b in (raw, rnd))
        parts = [f"{features_name} {_pct(raw)}%", f"its own architecture at random init {_pct(rnd)}%" if rnd is not None else
                 "its own architecture at random init (not measured: add its random_init baseline to params.yaml)"]
        for key in (k for k in others if k in rnd_scores):
            parts[-1] += f" ({key} {_pct(rnd_scores[key])}% vs {_pct(own[key])}%)"
            beats = beats and own[key] > rnd_scores[key]
        lines.append(f"- **{m}** {claim} {_pct(ours)}% {'beats' if beats else 'does NOT beat'} " + " and ".join(parts) + ".")
    return lines


def _timing(metrics_dir: Path, method: str) -> dict:
    """Wall time and throughput of pretraining (their own file: volatile, not a metric)."""
    path = metrics_dir / "pretrain" / f"{method}.timing.json"
    return json.loads(path.read_text()) if path.is_file() else {"wall_seconds": float("nan"), "images_per_second": float("nan")}


def encoder_description(enc) -> str:
    """One cell naming an encoder section: "resnet [1, 1] w32", "vit p4 d192 x6", "transformer d128 x2, causal"."""
    if enc.arch == "resnet":
        return f"{enc.arch} {list(enc.layers)} w{enc.width}"
    if enc.arch == "transformer":
        return f"transformer d{enc.dim} x{enc.depth}, {'causal' if enc.causal else 'bidirectional'}"
    if enc.arch != "vit":  # the library backbones (pipeline/models/standard.py): their name says it all
        return enc.arch
    return f"vit p{enc.patch_size} d{enc.dim} x{enc.depth}"


def _pretraining_table(results: dict, params: Params, metrics_dir: Path) -> list[str]:
    lines = ["## Pretraining", "", "| method | encoder | epochs | final loss | kNN-20 val monitor | wall time (s) | "
             f"{sample_noun(params)}/s |", "|---|---|---:|---:|---:|---:|---:|"]
    for m in params.methods:
        p, enc = results[m]["pretrain"] | _timing(metrics_dir, m), params.encoder_for(m)
        desc = encoder_description(enc)
        epochs = p.get("epochs", params.pretrain_for(m).epochs)
        lines.append(f"| {m} | {desc} | {epochs} | {p['loss']:.3f} | {_pct(p['knn_top1'])} | {p['wall_seconds']:.0f} | "
                     f"{p['images_per_second']:.0f} |")
    return lines + ["", "![training curves](figures/training_curves.png)", ""]


def _lm_cell(v: float | None, percent: bool = False) -> str:
    return "-" if v is None else _pct(v) if percent else f"{v:.2f}"


def language_modelling_table(results: dict, params: Params) -> list[str]:
    """Held-out (val split) language-modelling numbers of the methods that report them
    (``Method.held_out_metrics``, in metrics/pretrain/<method>.json); ``[]`` when none does."""
    rows = {m: results[m]["pretrain"] for m in params.methods if any(k in results[m]["pretrain"] for k in LM_KEYS)}
    if not rows:
        return []
    lines = ["## Language modelling (held-out val)", "",
             "| method | predicts | masked-token accuracy (%) | perplexity | unigram perplexity |", "|---|---|---:|---:|---:|"]
    for m, p in rows.items():
        target = "masked tokens" if "masked_accuracy" in p else "next token"
        lines.append(f"| {m} | {target} | {_lm_cell(p.get('masked_accuracy'), percent=True)} | {_lm_cell(p.get('perplexity'))} | "
                     f"{_lm_cell(p.get('unigram_perplexity'))} |")
    return lines + ["", "Perplexity is exp(mean cross-entropy) on the val split's target tokens: for masked LM the masked "
                    "tokens (a fixed-seed masking), for causal LM every next token, so the two are not comparable with each "
                    "other. Unigram perplexity: an add-one unigram model counted on the pretrain split, on the causal "
                    "model's target tokens (what a model that ignores context scores).", ""]


def build_report(params: Params, manifest: dict, metrics_dir: Path, live_root: Path, out: Path, fig_dir: Path) -> str:
    """Write the report to ``out`` and its figures to ``fig_dir``; returns the markdown."""
    results, baseline_of = load_results(metrics_dir, params)
    df = summary_table(results)
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures.training_curves({m: live_root / m for m in params.methods}, fig_dir / "training_curves.png")
    figures.method_by_metric(df, fig_dir / "method_by_metric.png")
    protocols = [PROTOCOLS.get(name) for name in PROTOCOLS.names() if name in params.protocols]  # report order
    for protocol in protocols:
        protocol.figures(results, baseline_of, params, manifest, fig_dir)
    noun = sample_noun(params)

    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    n_labels = counts.get("train", 0) + counts.get("val", 0)
    features = features_baseline(params) or modality_of(manifest).baseline.name  # listed, or the modality's (not measured)
    lines = [
        "# Self-supervised pretraining report", "",
        f"Data: {modality_of(manifest).describe_data(params.data.source, manifest)}, splits {counts} (pretraining uses no labels).", "",
        "## Method by metric (top-1 %, test split)", "",
        "Baselines use the same splits and protocols. Every classifier saw the same labels: the "
        f"{n_labels:,} train+val {noun} (the linear probe picks its L2 strength on val, then refits on both). The random-init "
        "rows' finetune column is supervised training from scratch (same recipe, full learning rate). Few-shot columns: "
        "5-way, nearest prototype.", "",
        to_markdown(df), "", *verdicts(results, baseline_of, features), "",
        *_pretraining_table(results, params, metrics_dir), *language_modelling_table(results, params),
        "![method by metric](figures/method_by_metric.png)", "",
    ]
    for protocol in protocols:
        lines += protocol.section(results, baseline_of, params)
    text = "\n".join(lines)
    write_bytes(out, text.encode())
    return text

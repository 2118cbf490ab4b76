"""DVC stages `linear-eval@<method>`, `few-shot@<method>`, `transfer@<method>`,
`finetune@<method>`, `label-efficiency@<method>` and `diagnostics@<method>`: one evaluation
protocol on a pretrained encoder.

    python stages/evaluate.py linear-eval --encoder models/simclr/encoder.pt --shards data/shards --metrics ...
"""

from __future__ import annotations

import argparse
import math

import torch

from pipeline.config import Params, load_params
from pipeline.data.augment import ViewMaker
from pipeline.data.shards import load_split, read_manifest
from pipeline.errors import exit_on_user_error
from pipeline.eval.checks import check_protocol_params
from pipeline.eval.diagnostics import diagnose
from pipeline.eval.embedding_map import embedding_map
from pipeline.eval.features import encoder_features
from pipeline.eval.finetune import finetune
from pipeline.eval.label_efficiency import label_efficiency
from pipeline.eval.linear_sgd import linear_sgd
from pipeline.eval.protocols import few_shot_eval, linear_and_knn, seed_everything, transfer_eval
from pipeline.models.encoder import Encoder, load_encoder
from pipeline.outputs import StagedOutputs, write_json
from pipeline.train.loop import pick_device

PROTOCOLS = ("linear-eval", "few-shot", "transfer", "finetune", "label-efficiency", "diagnostics")


def random_init_like(encoder: Encoder, seed: int) -> Encoder:
    """The same architecture at the initialisation pretraining started from (same seed)."""
    seed_everything(seed)
    return Encoder(encoder.params, encoder.channels, encoder.mean.flatten().tolist(), encoder.std.flatten().tolist(),
                   encoder.image_size).eval()


def linear_eval(encoder: Encoder, shards: str, params: Params, device: torch.device) -> dict:
    """Protocol (a) + kNN, protocol (b), and (a) + kNN of the matched random init."""
    result = linear_and_knn(encoder_features(encoder, device), shards, params)
    le = params.linear_eval
    if le.sgd_epochs:
        train, test = load_split(shards, "train"), load_split(shards, "test")
        result["linear_sgd"] = linear_sgd(encoder, train, test, le.sgd_epochs, le.sgd_batch_size, le.sgd_lr, params.seed, device,
                                          crop_scale=tuple(le.sgd_crop_scale))
    if le.random_init:
        result["random_init"] = linear_and_knn(encoder_features(random_init_like(encoder, params.seed), device), shards, params)
    return result


def label_efficiency_eval(encoder: Encoder, shards: str, params: Params, device: torch.device) -> dict:
    """Supervised from scratch / linear probe / finetune at each label fraction of train."""
    train, val, test = (load_split(shards, s) for s in ("train", "val", "test"))
    ft = params.finetune
    out = {}
    for fraction in params.label_efficiency.fractions:
        n = max(1, round(fraction * (len(train[1]) + len(val[1]))))
        batch_size = min(ft.batch_size, max(2, n // 2))
        # at least min_steps optimizer steps, so 1% of the labels still trains for real
        epochs = max(ft.epochs, math.ceil(params.label_efficiency.min_steps / max(1, n // batch_size)))
        cfg = ft.model_copy(update={"epochs": epochs, "batch_size": batch_size})
        res = label_efficiency(encoder, lambda: random_init_like(encoder, params.seed), train, val, test, [fraction], cfg,
                               params.linear_eval.c_grid, params.linear_eval.max_iter, params.seed, device,
                               supervised_cfg=cfg.model_copy(update={"encoder_lr_mult": 1.0}))
        out[str(fraction)] = res[fraction] | {"epochs": epochs}
    return out


def diagnostics_eval(encoder: Encoder, shards: str, params: Params, device: torch.device, embedding_out: str | None) -> dict:
    images, labels = load_split(shards, "test")
    images, labels = images[: params.diagnostics.images], labels[: params.diagnostics.images]
    views = ViewMaker(params.augment, params.seed, device)
    result = diagnose(encoder, images, views, device, collapse_threshold=params.diagnostics.collapse_threshold)
    if params.diagnostics.tsne and embedding_out:
        embedding_map(encoder_features(encoder, device)(images), labels.numpy(), params.seed, str(embedding_out))
    return result


@exit_on_user_error
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("protocol", choices=PROTOCOLS)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--embedding", help="diagnostics: TSV of the 2-D embedding map (x, y, label)")
    args = ap.parse_args()
    params = load_params(args.params)
    seed_everything(params.seed)
    manifest = read_manifest(args.shards)
    check_protocol_params(args.protocol, params, manifest)
    device = pick_device()
    encoder = load_encoder(args.encoder)
    with StagedOutputs() as staged:  # the metrics (and the map) appear only when the protocol succeeded
        metrics_path = staged.file(args.metrics)
        embedding = staged.file(args.embedding) if args.protocol == "diagnostics" and args.embedding else None
        result = run_protocol(args.protocol, encoder, args.shards, manifest, params, device, embedding)
        write_json(metrics_path, result)
    print(result)


def run_protocol(protocol: str, encoder: Encoder, shards: str, manifest: dict, params: Params, device: torch.device,
                 embedding_out=None) -> dict:
    if protocol == "finetune":
        test = load_split(shards, "test")
        return finetune(encoder, shards, manifest["splits"]["train"]["count"], len(manifest["classes"]), test,
                        params.finetune, params.seed, device)
    if protocol == "linear-eval":
        return linear_eval(encoder, shards, params, device)
    if protocol == "label-efficiency":
        return label_efficiency_eval(encoder, shards, params, device)
    if protocol == "diagnostics":
        return diagnostics_eval(encoder, shards, params, device, embedding_out)
    if protocol == "few-shot":
        return few_shot_eval(encoder_features(encoder, device), shards, params)
    return transfer_eval(encoder_features(encoder, device), manifest["image_size"], manifest["channels"], params)


if __name__ == "__main__":
    main()

"""DVC stage `baselines`: the results an SSL encoder must beat, by the same protocols on
the same splits: raw pixels and the randomly initialised encoder (linear, kNN, few-shot,
transfer), and supervised training from scratch (the finetune protocol from random init)."""

from __future__ import annotations

import argparse

from pipeline.config import load_params
from pipeline.data.shards import load_split, read_manifest
from pipeline.errors import exit_on_user_error
from pipeline.eval.checks import check_protocol_params
from pipeline.eval.features import encoder_features, pixel_features
from pipeline.eval.finetune import finetune
from pipeline.eval.protocols import few_shot_eval, linear_and_knn, seed_everything, transfer_eval
from pipeline.models.encoder import build_encoder
from pipeline.outputs import StagedOutputs, write_json
from pipeline.train.loop import pick_device


@exit_on_user_error
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--shards", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    params = load_params(args.params)
    manifest = read_manifest(args.shards)
    check_protocol_params("baselines", params, manifest)  # before any work
    device = pick_device()
    size, channels = manifest["image_size"], manifest["channels"]
    with StagedOutputs() as staged:
        metrics_path = staged.file(args.metrics)  # an unwritable path fails before the work
        write_json(metrics_path, _baselines(params, args.shards, manifest, device, size, channels))


def _baselines(params, shards: str, manifest: dict, device, size: int, channels: int) -> dict:
    results = {}
    for name in ("raw_pixels", "random_init"):
        seed_everything(params.seed)  # the random encoder is the one pretraining starts from
        featurize = pixel_features if name == "raw_pixels" else encoder_features(build_encoder(params.encoder, manifest), device)
        results[name] = linear_and_knn(featurize, shards, params)
        results[name]["few_shot"] = few_shot_eval(featurize, shards, params)
        results[name]["transfer"] = transfer_eval(featurize, size, channels, params)
        print(name, results[name])
    seed_everything(params.seed)
    results["supervised_scratch"] = finetune(
        build_encoder(params.encoder, manifest), shards, manifest["splits"]["train"]["count"], len(manifest["classes"]),
        load_split(shards, "test"), params.finetune.model_copy(update={"encoder_lr_mult": 1.0}), params.seed, device,
        desc="supervised from scratch")
    return results


if __name__ == "__main__":
    main()

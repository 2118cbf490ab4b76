"""DVC stage `pretrain@<method>`: self-supervised pretraining of the encoder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pipeline import dist
from pipeline.config import load_params
from pipeline.data.shards import load_split, read_manifest, stream_batches
from pipeline.errors import UserError, exit_on_user_error
from pipeline.eval.features import encoder_features
from pipeline.eval.knn import knn_accuracy
from pipeline.eval.protocol import seed_everything
from pipeline.methods import registry
from pipeline.models.encoder import build_encoder, save_encoder
from pipeline.outputs import StagedOutputs, write_json
from pipeline.provenance import code_fingerprint, provenance
from pipeline.train.checkpoint import fingerprint
from pipeline.train.loop import TrainJob, check_finite, fit, pick_device
from pipeline.train.optim import param_groups

PREPARE_SAMPLE = 5000  # pretrain images a method may fit data-dependent parts on (BEiT's tokenizer)


@exit_on_user_error
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--method", required=True)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--out", required=True, help="folder for encoder.pt and checkpoint.pt")
    ap.add_argument("--metrics", required=True, help="headline metrics (what `dvc metrics diff` shows)")
    ap.add_argument("--timing", required=True, help="wall time and throughput (volatile, kept out of the metrics)")
    ap.add_argument("--live", required=True, help="DVCLive folder for the training curves")
    args = ap.parse_args()
    params = load_params(args.params)
    method_cls = registry.get(args.method)
    manifest = read_manifest(args.shards)
    dist.init_from_env()
    seed_everything(params.seed)
    device = pick_device()
    out = Path(args.out)
    with StagedOutputs() as staged:  # outputs appear together at the end, or not at all
        _train(args, params, method_cls, manifest, device, out, staged)


def _train(args, params, method_cls, manifest, device, out: Path, staged: StagedOutputs) -> None:
    # staged first (only rank 0 writes): an unwritable output path fails now, not after training
    paths = {"encoder": staged.file(out / "encoder.pt"), "provenance": staged.file(out / "provenance.json"),
             "metrics": staged.file(args.metrics), "timing": staged.file(args.timing),
             "live": staged.dir(args.live)} if dist.is_main() else {}

    p = params.pretrain_for(args.method)
    method = method_cls(build_encoder(params.encoder_for(args.method), manifest), params.method_params[args.method], params.augment,
                        params.seed + dist.rank(), device)
    n_images = manifest["splits"]["pretrain"]["count"]
    if n_images < p.batch_size * dist.world_size():
        raise UserError(f"pretrain.batch_size={p.batch_size} (x {dist.world_size()} processes) exceeds the {n_images} pretrain images "
                        f"in {args.shards}; lower pretrain.batch_size (or a `pretrain: {{batch_size: ...}}` override under "
                        f"'{args.method}:') or raise data.pretrain_size")
    method.to(device)
    sample = next(stream_batches(args.shards, "pretrain", min(n_images, PREPARE_SAMPLE), 1, params.seed))[0].to(device)
    method.prepare(sample)
    bank_x, bank_y = load_split(args.shards, "train")
    query_x, query_y = load_split(args.shards, "val")
    bank_x, bank_y = bank_x[: p.knn_bank_size], bank_y[: p.knn_bank_size].numpy()
    query_x, query_y = query_x[: p.knn_query_size], query_y[: p.knn_query_size].numpy()

    def monitor(epoch: int, stats: dict) -> dict:
        if (epoch + 1) % p.knn_every and epoch + 1 != p.epochs:
            return {}
        featurize = encoder_features(method.encoder, device)
        k = min(20, len(bank_y))  # the monitor's k; a bank smaller than 20 votes over all of it
        return {"knn_top1": knn_accuracy(featurize(bank_x), bank_y, featurize(query_x), query_y, k, params.knn.temperature)}

    resolved = {"seed": params.seed, "encoder": params.encoder_for(args.method).model_dump(), "augment": params.augment.model_dump(),
                "pretrain": p.model_dump(), args.method: params.method_params[args.method].model_dump()}
    # the code is part of the run: a checkpoint made by other code is never resumed
    run_fingerprint = fingerprint(args.method, resolved, manifest["splits"]["pretrain"]["shards"], code_fingerprint(__file__))
    job = TrainJob(
        module=method, param_groups=param_groups(method, params=method.optimized_parameters()), optim=p,
        batches=lambda epoch: stream_batches(args.shards, "pretrain", p.batch_size, p.shuffle_buffer, params.seed * 1000 + epoch),
        steps_per_epoch=n_images // (p.batch_size * dist.world_size()),
        after_optimizer_step=method.after_optimizer_step, extra_state=method.extra_state,
        load_extra_state=method.load_extra_state, on_epoch_end=monitor,
        checkpoint_path=out / "checkpoint.pt", checkpoint_every=p.checkpoint_every, fingerprint=run_fingerprint, amp=p.amp,
        batch_size_key="pretrain.batch_size", lr_key=f"pretrain.lr, or a `pretrain: {{lr: ...}}` override under '{args.method}:'",
    )
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    history = fit(job, device, desc=f"pretrain {args.method}")
    method.finalize(sample)
    check_finite(method.encoder, f"[pretrain {args.method}] after finalize", "pretrain.lr")
    if not dist.is_main():
        return
    last = history[-1]
    _log_curves(paths["live"], history)
    save_encoder(method.encoder, paths["encoder"])
    write_json(paths["provenance"], provenance(resolved, method=args.method, device=str(device), world_size=dist.world_size()))
    write_json(paths["metrics"], {"loss": last["loss"], "knn_top1": last["knn_top1"], "epochs": p.epochs})
    write_json(paths["timing"], {
        "wall_seconds": round(time.time() - t0, 1),
        "images_per_second": round(sum(h["images_per_s"] for h in history) / len(history), 1),
    })


def _log_curves(live_dir: Path, history: list[dict]) -> None:
    """Write the per-epoch curves with DVCLive (replayed from the history, so a resumed run
    draws the same curves as an uninterrupted one)."""
    from dvclive import Live

    with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        for h in history:
            live.step = h["epoch"]
            for key in ("loss", "lr", "knn_top1"):
                if key in h:
                    live.log_metric(key, h[key])


if __name__ == "__main__":
    main()

"""MoCo's queue under DDP (2 processes on gloo): it stays out of DDP's buffer broadcast (32 MB a
step at the paper's size) and stays correct: every rank starts from rank 0's prepared queue
and enqueues every rank's keys, so the queues agree without being broadcast."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from tests.dist.group import WORLD, spawn

REPO = Path(__file__).resolve().parents[2]
PER_RANK, STEPS, QUEUE = 8, 2, 128  # 2 steps x 2 views x 16 keys = 64 rows written of 128
MARK = 7.0


def _rank(rank: int, out: str) -> dict:
    from pipeline.config import parse_params
    from pipeline.registry import METHODS
    from pipeline.modalities.encoders import build_encoder
    from pipeline.train.loop import TrainJob, fit
    from pipeline.train.optim import param_groups
    from tests.conftest import random_images

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["encoder"].update({"layers": [1, 1], "width": 8})
    raw["moco"].update({"queue_size": QUEUE, "hidden_dim": 32, "projection_dim": 16, "bn_group_size": 4})
    params = parse_params(raw)
    manifest = {"channels": 1, "image_size": 28, "mean": [0.3], "std": [0.3]}
    torch.manual_seed(0)
    method = METHODS.get("moco")(build_encoder(params.encoder_for("moco"), manifest), params.method_params["moco"],
                                  params.augment, 100 + rank, torch.device("cpu"))
    method.prepare(random_images(32, seed=9))  # each rank draws its own views: rank 0's queue is broadcast
    prepared = method.queue.clone()
    if rank == 1:  # a row no step writes: with DDP's broadcast it would become rank 0's
        method.queue[-1] = MARK
    optim = params.pretrain_for("moco").model_copy(update={"epochs": 1, "batch_size": PER_RANK, "warmup_epochs": 0})
    job = TrainJob(module=method, param_groups=param_groups(method, params=method.optimized_parameters()), optim=optim,
                   batches=lambda epoch: [(random_images(PER_RANK, seed=10 * s + rank),) for s in range(STEPS)],
                   steps_per_epoch=STEPS, after_optimizer_step=method.after_optimizer_step, precision="fp32")
    fit(job, torch.device("cpu"))
    return {"prepared": prepared, "queue": method.queue.clone(), "ptr": int(method.queue_ptr)}


def test_queue_is_not_broadcast_and_agrees_across_ranks(tmp_path):
    r0, r1 = spawn(_rank, tmp_path, timeout=120)
    assert torch.equal(r0["prepared"], r1["prepared"])  # one starting queue, rank 0's
    written = STEPS * 2 * PER_RANK * WORLD
    assert r0["ptr"] == r1["ptr"] == written
    assert torch.equal(r0["queue"][:written], r1["queue"][:written])  # both ranks enqueued the same gathered keys
    assert not torch.equal(r0["queue"][:written], r0["prepared"][:written])  # and keys were written
    assert torch.equal(r0["queue"][written:-1], r0["prepared"][written:-1])
    assert (r1["queue"][-1] == MARK).all()  # rank 1's own row survived: DDP did not broadcast the queue
    assert torch.equal(r0["queue"][-1], r0["prepared"][-1])

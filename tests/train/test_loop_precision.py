"""The training loop's precision and host syncs, through the real ``fit``:

- between its finiteness checks (every CHECK_EVERY steps) a step of ``fit`` makes no
  synchronising call: a real method (SimCLR, views with blur and solarize) under bf16 CPU
  autocast, with foreach LARS and gradient clipping;
- ``precision`` reaches autocast (bf16 changes the numbers; ``amp=False`` is float32);
- fp16 trains with a gradient scaler whose state is checkpointed: a resumed run ends with the
  weights of an uninterrupted one.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.config import OptimParams, parse_params
from pipeline.registry import METHODS
from pipeline.modalities.encoders import build_encoder
from pipeline.train import checkpoint as ckpt
from pipeline.train.loop import CHECK_EVERY, TrainJob, fit
from pipeline.train.optim import param_groups
from tests.conftest import random_images
from tests.sync_counter import SyncCounter
from tests.train.test_schedule_and_loop import Regression, _data  # the loop tests' toy problem

CPU = torch.device("cpu")


def test_fit_steps_make_no_synchronising_call_between_checks(default_params_dict, one_thread):
    raw = dict(default_params_dict)
    raw["encoder"] = {**raw["encoder"], "layers": [1, 1], "width": 8}
    raw["simclr"] = {"temperature": 0.2, "hidden_dim": 32, "projection_dim": 16}
    raw["augment"] = {**raw["augment"], "blur_p": [0.5], "solarize_p": [0.0, 0.2]}
    params = parse_params(raw)
    manifest = {"channels": 3, "image_size": 28, "mean": [0.5] * 3, "std": [0.25] * 3}
    method = METHODS.get("simclr")(build_encoder(params.encoder_for("simclr"), manifest), params.method_params["simclr"],
                                    params.augment, 0, CPU)
    steps = 5
    assert steps < CHECK_EVERY
    counts = []

    def batches(epoch):
        for s in range(steps):
            counts.append(syncs.count)  # syncs so far, as step s starts
            yield (random_images(16, channels=3, seed=s),)
        counts.append(syncs.count)

    optim = OptimParams(epochs=1, batch_size=16, optimizer="lars", lr=0.3, weight_decay=1e-6, grad_clip=1.0)
    job = TrainJob(module=method, param_groups=param_groups(method, params=method.optimized_parameters()), batches=batches,
                   steps_per_epoch=steps, optim=optim, after_optimizer_step=method.after_optimizer_step, precision="bf16")
    with SyncCounter() as syncs:
        fit(job, CPU)
    per_step = [b - a for a, b in zip(counts, counts[1:])]
    assert per_step == [0] * steps, (per_step, syncs.calls)


def _job(epochs: int, precision: str, path=None, amp: bool = True) -> TrainJob:
    torch.manual_seed(0)
    model = Regression()
    return TrainJob(module=model, param_groups=param_groups(model), batches=_data, steps_per_epoch=4,
                    optim=OptimParams(epochs=epochs, batch_size=16, lr=0.5, warmup_epochs=1), checkpoint_path=path,
                    fingerprint="f", precision=precision, amp=amp)


def test_precision_reaches_autocast():
    fp32 = fit(_job(1, "fp32"), CPU)[-1]["loss"]
    assert fit(_job(1, "auto"), CPU)[-1]["loss"] == fp32  # auto on the CPU: float32, as before
    assert fit(_job(1, "bf16", amp=False), CPU)[-1]["loss"] == fp32  # amp off: float32 whatever precision says
    assert fit(_job(1, "bf16"), CPU)[-1]["loss"] != pytest.approx(fp32, rel=1e-6)  # bfloat16 rounds the matmuls


def test_fp16_scaler_state_is_checkpointed_and_a_resume_is_exact(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = _job(3, "fp16", tmp_path / "a" / "ckpt.pt")
    history = fit(straight, CPU)
    assert history[-1]["loss"] < history[0]["loss"]
    assert ckpt.load_resumable(tmp_path / "a" / "ckpt.pt", "f") is None  # finished: not resumable
    killed = _job(3, "fp16", tmp_path / "b" / "ckpt.pt")
    killed.batches = lambda e: (_ for _ in ()).throw(KeyboardInterrupt) if e == 2 else _data(e)
    with pytest.raises(KeyboardInterrupt):
        fit(killed, CPU)
    state = ckpt.load_resumable(tmp_path / "b" / "ckpt.pt", "f")
    assert state["scaler"]["scale"] > 0  # the scaler's scale and growth tracker travel with the checkpoint
    resumed = _job(3, "fp16", tmp_path / "b" / "ckpt.pt")
    fit(resumed, CPU)
    for p, q in zip(straight.module.parameters(), resumed.module.parameters()):
        assert torch.equal(p, q)

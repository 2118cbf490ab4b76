"""DDP with real process groups: 2 processes on gloo (torch.multiprocessing spawn), never threads.

- a 2-rank ``fit`` equals a 1-rank ``fit`` at the same global batch (SimCLR, BYOL, SwAV);
- every rank's RNGs are checkpointed and restored: a 2-rank run interrupted after an epoch
  and resumed ends with the weights of an uninterrupted one;
- over 3 shards (uneven on 2 ranks) every rank takes the same number of steps and the run
  finishes under a timeout.

SyncBatchNorm does not run on CPU, so each rank normalises its own half of the batch; the
1-rank reference does the same by normalising each rank's half separately (``PerRankBN``).

The equivalence runs the ResNets in NCHW: channels_last convolutions round differently at
different batch sizes and thread counts (a one-thread rank's 8 images vs the reference's 16),
and on this random data one pre-activation is +1.0e-6 in float64 and -6e-7 on a rank in NHWC:
the ReLU flips and gradients move by up to 1e-2, while every other value agrees to 1e-6. What
DDP does with channels_last weights, all-reducing each rank's gradients, is checked exactly on
its own (``test_ddp_averages_channels_last_gradients``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from tests.dist.group import WORLD, spawn

REPO = Path(__file__).resolve().parents[2]
GLOBAL_BATCH = 16  # 8 images per rank
STEPS = 2
# float32, 2 optimizer steps of SGD at lr 0.6 * 16 / 256: measured differences are ~1e-7
# (summation order of the gathered loss and of DDP's gradient all-reduce), so 1e-5 is tight
# enough to catch a missing or doubled gradient term or a wrong normalisation group
# (those differ by 1e-2 or more) and loose enough for float rounding.
RTOL, ATOL = 1e-4, 1e-5


# -- what every process builds -------------------------------------------------------------


def _params(method: str):
    from pipeline.config import parse_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["encoder"].update({"layers": [1, 1], "width": 8})
    raw["swav"].update({"num_prototypes": 30, "freeze_prototypes_iters": 0, "num_small_crops": 2})
    raw["byol"].update({"hidden_dim": 32, "projection_dim": 16, "predictor_hidden_dim": 32})
    return parse_params(raw)


class DeterministicViews:
    """Views that depend only on the image and the call count, so a rank's half of the
    batch gets exactly the views the reference gives those images (the real ViewMaker draws
    per call and rank). Call k: flip when k is odd, brightness x(1 + 0.05 * (k mod 3))."""

    def __init__(self):
        self.calls = 0
        self.gen = torch.Generator().manual_seed(0)

    def __call__(self, images, out_size=None, scale=None, view=0):
        from pipeline.modalities.image.views import to_float

        k, self.calls = self.calls, self.calls + 1
        x = to_float(images)
        x = (x.flip(-1) if k % 2 else x) * (1 + 0.05 * (k % 3))
        if out_size is not None:
            x = F.interpolate(x, size=(out_size, out_size), mode="bilinear", align_corners=False)
        return x

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


class PerRankBN(nn.Module):
    """BatchNorm over each rank's rows separately: a batch is view-major ``[V * N, ...]``
    (every method stacks its views so), row i belongs to image ``i mod N`` and that image
    to rank ``(i mod N) // (N / world)``."""

    def __init__(self, bn: nn.Module, n: int, world: int):
        super().__init__()
        self.bn, self.n, self.world = bn, n, world

    def forward(self, x):
        rank_of_row = (torch.arange(x.shape[0]) % self.n) // (self.n // self.world)
        rows = [torch.nonzero(rank_of_row == r).squeeze(1) for r in range(self.world)]
        out = torch.cat([self.bn(x[idx]) for idx in rows])
        return out[torch.argsort(torch.cat(rows))]


def per_rank_batchnorm(module: nn.Module, n: int, world: int) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, PerRankBN(child, n, world))
        else:
            per_rank_batchnorm(child, n, world)


def _images(epoch: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * epoch + step)
    return torch.randint(0, 256, (GLOBAL_BATCH, 1, 28, 28), generator=g, dtype=torch.uint8)


def _method(name: str, seed: int, views: str):
    from pipeline.registry import METHODS
    from pipeline.modalities.encoders import build_encoder

    params = _params(name)
    torch.manual_seed(0)  # the same initial weights in every process
    manifest = {"channels": 1, "image_size": 28, "mean": [0.3], "std": [0.35]}
    method = METHODS.get(name)(build_encoder(params.encoder_for(name), manifest), params.method_params[name],
                                params.augment, seed, torch.device("cpu"))
    if views == "deterministic":
        method.views = DeterministicViews()
    use_channels_last(method, False)  # the ranks and the reference round alike (module docstring)
    return method, params


def use_channels_last(module: nn.Module, on: bool) -> nn.Module:
    from pipeline.models.resnet import SmallResNet

    for m in module.modules():  # the encoder and any momentum copy of it
        if isinstance(m, SmallResNet):
            m.use_channels_last(on)
    return module


def _job(name: str, rank: int, world: int, views: str, epochs: int = 1, checkpoint: Path | None = None, stop_at: int | None = None):
    from pipeline.train.loop import TrainJob
    from pipeline.train.optim import param_groups

    method, params = _method(name, seed=100 + rank, views=views)
    per_rank = GLOBAL_BATCH // world

    def batches(epoch):
        if epoch == stop_at:  # a kill between epochs, on every rank before any collective
            raise KeyboardInterrupt
        return [(_images(epoch, s)[rank * per_rank:(rank + 1) * per_rank],) for s in range(STEPS)]

    optim = params.pretrain_for(name).model_copy(update={"epochs": epochs, "batch_size": per_rank, "warmup_epochs": 0})
    job = TrainJob(module=method, param_groups=param_groups(method, params=method.optimized_parameters()), optim=optim,
                   batches=batches, steps_per_epoch=STEPS, after_optimizer_step=method.after_optimizer_step,
                   extra_state=method.extra_state, load_extra_state=method.load_extra_state, checkpoint_path=checkpoint,
                   fingerprint="t", amp=False)
    return job, method


def _result(method, history, named: dict | None = None) -> dict:
    """Weights, last gradients and last epoch's loss; ``named``: the parameters by their
    names before any module was wrapped (the names stay comparable across runs)."""
    named = dict(method.named_parameters()) if named is None else named
    return {"params": {k: p.detach().clone() for k, p in named.items()},
            "grads": {k: p.grad.detach().clone() for k, p in named.items() if p.grad is not None},
            "loss": history[-1]["loss"]}


# -- the ranks -----------------------------------------------------------------------------


def _equivalence_rank(rank: int, out: str, methods: list[str]) -> dict:
    from pipeline.train.loop import fit

    results = {}
    for name in methods:
        job, method = _job(name, rank, WORLD, "deterministic")
        results[name] = _result(method, fit(job, torch.device("cpu")))
    # every rank's RNG restored on resume: interrupted after epoch 1 of 2, then resumed
    job, method = _job("simclr", rank, WORLD, "real", epochs=2)
    results["straight"] = _result(method, fit(job, torch.device("cpu")))
    ckpt = Path(out) / "ckpt.pt"
    job, _ = _job("simclr", rank, WORLD, "real", epochs=2, checkpoint=ckpt, stop_at=1)
    try:
        fit(job, torch.device("cpu"))
    except KeyboardInterrupt:
        pass
    torch.distributed.barrier()  # rank 0 has written the checkpoint
    job, method = _job("simclr", rank, WORLD, "real", epochs=2, checkpoint=ckpt)
    results["resumed"] = _result(method, fit(job, torch.device("cpu")))
    return results


def _channels_last_rank(rank: int, out: str) -> dict:
    """One DDP backward of a channels_last BYOL (no cross-rank loss terms) on this rank's half, and the same half's
    gradients without DDP (a copy of the same weights, in this process)."""
    method, _ = _method("byol", seed=100 + rank, views="deterministic")
    use_channels_last(method, True)
    local = copy.deepcopy(method)  # its own DeterministicViews, not yet called: the same views
    x = _images(0, 0)[rank * GLOBAL_BATCH // WORLD:(rank + 1) * GLOBAL_BATCH // WORLD]
    ddp = nn.parallel.DistributedDataParallel(method)  # kept alive: its reducer all-reduces in backward
    ddp(x)["loss"].backward()
    local(x)["loss"].backward()
    grads = lambda m: {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}  # noqa: E731
    channels_last = [p.is_contiguous(memory_format=torch.channels_last) for p in method.parameters() if p.dim() == 4]
    return {"reduced": grads(method), "local": grads(local), "channels_last": channels_last}


def _uneven_rank(rank: int, out: str, shards: str) -> dict:
    from pipeline.shards.manifest import read_manifest
    from pipeline.shards.read import stream_batches
    from pipeline.train.loop import fit

    job, method = _job("simclr", rank, WORLD, "real", epochs=2)
    count = read_manifest(shards)["splits"]["pretrain"]["count"]
    steps = []

    def batches(epoch):
        for batch in stream_batches(shards, "pretrain", 64, 100, seed=epoch):
            steps.append(epoch)
            yield batch[:1]

    job.batches, job.steps_per_epoch = batches, count // (64 * WORLD)
    job.optim = job.optim.model_copy(update={"batch_size": 64})
    fit(job, torch.device("cpu"))
    return {"steps": steps}


# -- the tests -----------------------------------------------------------------------------

METHODS = ["simclr", "byol", "swav"]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    return spawn(_equivalence_rank, out, METHODS, timeout=120)


def _reference(name: str) -> dict:
    """One process, the global batch, BatchNorm per rank's half."""
    from pipeline.train.loop import fit

    job, method = _job(name, 0, 1, "deterministic")
    named = dict(method.named_parameters())
    per_rank_batchnorm(method, GLOBAL_BATCH, WORLD)
    return _result(method, fit(job, torch.device("cpu")), named)


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("name", METHODS)
def test_two_ranks_equal_one_rank_at_the_same_global_batch(two_ranks, name):
    ref = _reference(name)
    ranks = [r[name] for r in two_ranks]
    # the ranks' weights agree exactly (DDP averages the gradients before every step)
    assert _max_diff(ranks[0]["params"], ranks[1]["params"]) == 0
    # the epoch loss: each rank logs the mean over its half; their mean is the global one
    loss = sum(r["loss"] for r in ranks) / WORLD
    assert loss == pytest.approx(ref["loss"], rel=RTOL, abs=ATOL)
    assert ranks[0]["grads"].keys() == ref["grads"].keys()
    for k in ref["grads"]:  # the last step's gradients, after DDP's all-reduce
        torch.testing.assert_close(ranks[0]["grads"][k], ref["grads"][k], rtol=RTOL, atol=ATOL, msg=f"grad {k}")
    for k in ref["params"]:  # the weights after two steps
        torch.testing.assert_close(ranks[0]["params"][k], ref["params"][k], rtol=RTOL, atol=ATOL, msg=f"param {k}")
    moved = max(float((ref["params"][k] - _method(name, 0, "deterministic")[0].state_dict()[k]).abs().max())
                for k in ref["params"])
    assert moved > 100 * ATOL  # the steps did change the weights: the comparison is not vacuous


def test_each_rank_resumes_its_own_rng(two_ranks):
    """Interrupted after epoch 1 and resumed, each rank draws the views it would have drawn:
    the weights equal the uninterrupted run's. (With rank 0's generator restored on both
    ranks, rank 1's views after the resume differ and so do the weights.)"""
    for r in two_ranks:
        for k, p in r["straight"]["params"].items():
            assert torch.equal(p, r["resumed"]["params"][k]), k


def test_ddp_averages_channels_last_gradients(tmp_path):
    """With NHWC conv weights, DDP's all-reduce gives every rank the mean of the ranks' own
    gradients: the bucket views keep the weights' layout, so no gradient is scrambled."""
    ranks = spawn(_channels_last_rank, tmp_path, timeout=90)
    assert all(all(r["channels_last"]) and len(r["channels_last"]) > 3 for r in ranks)
    for k, g in ranks[0]["reduced"].items():
        mean = (ranks[0]["local"][k] + ranks[1]["local"][k]) / WORLD
        torch.testing.assert_close(g, mean, rtol=1e-6, atol=1e-7, msg=f"grad {k}")
        torch.testing.assert_close(ranks[1]["reduced"][k], g, rtol=0, atol=0, msg=f"grad {k} on rank 1")


def test_uneven_shards_give_every_rank_the_same_steps(tiny_shards, tmp_path):
    """400 pretrain images in 3 shards (150, 150, 100) on 2 ranks, batch 64: by whole shards
    the ranks would get 250 and 150 images (3 and 2 steps) and one would wait in an
    all-reduce; by sample every rank takes 400 // 128 = 3 steps an epoch."""
    results = spawn(_uneven_rank, tmp_path, str(tiny_shards), timeout=90)
    assert [r["steps"] for r in results] == [[0, 0, 0, 1, 1, 1]] * WORLD

"""Every registered method, as a GPU host runs it, shown on the CPU by proxies:

- one training step (forward, backward, optimizer step, EMA hook) under
  ``torch.autocast("cpu", torch.bfloat16)`` with blur and solarize on (the ImageNet recipes'
  views), with a finite loss and finite gradients;
- that step makes no synchronising call (tests/sync_counter.py): 0 per step;
- the view maker makes none either: 0 per view.

Parametrized over the registry, so a new method is covered the moment it registers. Sizes
are tiny (a 2-stage ResNet of width 8, a 1-block ViT, 16 images): what is under test is the
code path, not the learning.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from pipeline.config import EncoderParams, parse_params
from pipeline.modalities.image.views import ViewMaker
from pipeline.modalities.text.tokenizer import SPECIALS
from pipeline.registry import METHODS
from pipeline.modalities.encoders import build_encoder
from pipeline.train.optim import param_groups
from tests.conftest import random_images
from tests.sync_counter import SyncCounter

N = 16
SMALL = {  # the defaults' widths, shrunk so one step takes milliseconds
    "encoder": {"layers": [1, 1], "width": 8},
    "simclr": {"hidden_dim": 32, "projection_dim": 16},
    "moco": {"hidden_dim": 32, "projection_dim": 16, "queue_size": 64, "bn_group_size": 8},
    "byol": {"hidden_dim": 32, "projection_dim": 16, "predictor_hidden_dim": 32},
    "simsiam": {"dim": 32, "predictor_hidden_dim": 16},
    "swav": {"num_prototypes": 20, "hidden_dim": 32, "projection_dim": 16, "num_small_crops": 2, "queue_length": 32,
             "freeze_prototypes_iters": 1},
    "dino": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "num_local_crops": 2,
             "warmup_teacher_temp_fraction": 0.5, "warmup_teacher_temp": 0.02},
    "barlow_twins": {"hidden_dim": 32, "projection_dim": 32},
    "vicreg": {"hidden_dim": 32, "projection_dim": 32},
    "rotation": {"hidden_dim": 32},
    "jigsaw": {"num_permutations": 10, "tile_dim": 16, "hidden_dim": 32},
    "mae": {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, "encoder": {"dim": 32, "depth": 1, "heads": 2}},
    "beit": {"codebook_size": 16, "tokenizer_patches": 400, "head_blocks": 1, "encoder": {"dim": 32, "depth": 1, "heads": 2}},
}
VIEWS = {"blur_p": [1.0, 0.5], "solarize_p": [0.0, 0.5]}  # BYOL's per-view pattern, blur raised so every view blurs some
TEXT_VOCAB, TEXT_LEN = 64, 16


def _params(default_params_dict):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in default_params_dict.items()}
    for section, values in SMALL.items():
        if section in raw:
            merged = dict(raw[section])
            for k, v in values.items():
                merged[k] = {**merged[k], **v} if isinstance(v, dict) else v
            raw[section] = merged
    raw["augment"] = {**raw["augment"], **VIEWS}
    return parse_params(raw)


def _method_and_batch(name: str, default_params_dict):
    cls = METHODS.get(name)
    params = _params(default_params_dict)
    torch.manual_seed(0)
    if cls.modality == "text":
        enc = EncoderParams(arch="transformer", dim=16, depth=1, heads=2, causal=cls.causal)
        encoder = build_encoder(enc, {"modality": "text", "vocab_size": TEXT_VOCAB, "max_length": TEXT_LEN})
        ids = torch.randint(len(SPECIALS), TEXT_VOCAB, (N, TEXT_LEN), generator=torch.Generator().manual_seed(0))
        batch = torch.stack([ids, torch.ones_like(ids)], dim=1)  # packed [N, 2, L]
        method = cls(encoder, cls.Params(), params.augment, 0, torch.device("cpu"))
    else:
        manifest = {"channels": 3, "image_size": 28, "mean": [0.5] * 3, "std": [0.25] * 3}
        encoder = build_encoder(params.encoder_for(name), manifest)
        method = cls(encoder, params.method_params[name], params.augment, 0, torch.device("cpu"))
        batch = random_images(N, channels=3)
    method.prepare(batch)
    return method, batch


def _step(method, opt, batch, progress: float) -> torch.Tensor:
    out = method(batch)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    opt.step()
    method.after_optimizer_step(progress)
    return out["loss"].detach()


# The text methods sync by design (not this to change): the batch is trimmed to its
# longest entry (one int() of the lengths), the LM head runs on the real tokens only (boolean
# indexing), and MLM draws its masks on a CPU generator so every device gets the same ones.
# Their counts are pinned so a new sync is caught; image methods make none.
SYNC_BUDGET = {"clm": 3, "mlm": 9}


@pytest.mark.parametrize("name", METHODS.names())
def test_one_step_under_bf16_autocast_is_finite_and_sync_free(name, default_params_dict, one_thread):
    method, batch = _method_and_batch(name, default_params_dict)
    method.train()
    opt = torch.optim.SGD(param_groups(method, params=method.optimized_parameters()), lr=0.01, momentum=0.9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = _step(method, opt, batch, 0.1)  # a first step may read a one-time flag (BEiT's fitted tokenizer)
        with SyncCounter() as syncs:
            second = _step(method, opt, batch, 0.2)
    assert syncs.count == SYNC_BUDGET.get(name, 0), f"{name}: {syncs.count} synchronising calls per step: {syncs.calls}"
    assert torch.isfinite(first) and torch.isfinite(second), (first, second)
    grads = [p.grad for p in method.optimized_parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("channels", [1, 3])
def test_views_make_no_synchronising_call(params, channels):
    cfg = params.augment.model_copy(update=VIEWS)
    views = ViewMaker(cfg, 0, torch.device("cpu"))
    images = random_images(N, channels=channels)
    with SyncCounter() as syncs:
        for view in range(3):  # blur on every view, solarize on the second and third
            views(images, view=view)
        views(images, out_size=12, scale=(0.05, 0.4), view=2)  # a multi-crop local view
    assert syncs.count == 0, syncs.calls


def test_views_under_autocast_are_the_float32_views(params):
    """The views leave the caller's autocast: under bf16 autocast they are the float32 views
    of the same draws, bit for bit (a bf16 blur rounds them; the old in-place blur failed with
    "Index put requires the source and destination dtypes match")."""
    cfg = params.augment.model_copy(update=VIEWS)
    images = random_images(N, channels=3)
    plain = ViewMaker(cfg, 0, torch.device("cpu"))(images, view=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ViewMaker(cfg, 0, torch.device("cpu"))(images, view=0)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, plain)


def test_the_counter_counts_what_syncs():
    """The proxy itself: each kind of synchronising call is seen, plain device work is not."""
    x = torch.rand(8)
    mask = x > 0.5
    with SyncCounter() as syncs:
        y = torch.where(mask, x * 2, x).sum()  # stays on the device
        assert syncs.count == 0
        x.nonzero(), x[mask], y.item(), bool(y > 0), x.tolist(), x.cpu(), float(y), int(y > 0)
        torch.tensor([1.0], device="cpu")
        x[mask] = 0.0
    assert syncs.calls == ["nonzero", "bool-mask index", "Tensor.item", "Tensor.__bool__", "Tensor.tolist", "Tensor.cpu",
                           "Tensor.__float__", "Tensor.__int__", "torch.tensor(device=)", "bool-mask index"]


def test_sync_free_views_equal_the_gather_views_they_replaced(monkeypatch, capsys):
    """benchmarks/views_sync.py --smoke: the replaced nonzero/gather views (kept there as the
    baseline) and ViewMaker's give the same views bit for bit, grayscale and RGB with blur."""
    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    spec = importlib.util.spec_from_file_location("views_sync_bench", bench / "views_sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--smoke"])  # asserts the equality before it times anything
    assert capsys.readouterr().out.count("| torch.where (sync-free, now) |") == 2

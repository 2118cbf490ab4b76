"""The lr scaling rule (pipeline/train/optim.py) and the ImageNet preset's recipes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.config import OptimParams, parse_params
from pipeline.models.encoder import Encoder
from pipeline.presets import PRESETS, apply
from pipeline.train.optim import build_optimizer, param_groups, scaled_lr

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("rule,batch,want", [("linear", 256, 0.3), ("linear", 4096, 4.8), ("sqrt", 4096, 1.2),
                                             ("sqrt", 1024, 0.6), ("linear", 128, 0.15)])
def test_scaled_lr(rule, batch, want):
    assert scaled_lr(0.3, batch, rule) == pytest.approx(want)


@pytest.mark.parametrize("rule", ["linear", "sqrt"])
def test_build_optimizer_scales_by_the_global_batch(rule):
    cfg = OptimParams(epochs=1, batch_size=256, optimizer="lars", lr=0.3, lr_scaling=rule)
    opt = build_optimizer(param_groups(torch.nn.Linear(2, 2)), cfg, world_size=16)  # 16 x 256 = 4096
    want = 0.3 * (16 if rule == "linear" else 4)
    assert all(g["lr"] == pytest.approx(want) for g in opt.param_groups)


def test_simclr_sqrt_rule_is_the_papers_formula():
    # SimCLR App. B.1: lr = 0.075 x sqrt(BatchSize); with the batch-256 base 0.075 x 16 = 1.2
    for batch in (256, 512, 2048):
        assert scaled_lr(1.2, batch, "sqrt") == pytest.approx(0.075 * math.sqrt(batch))


@pytest.fixture(scope="module")
def imagenet():
    merged = apply((ROOT / "params.yaml").read_text(), (PRESETS / "imagenet.yaml").read_text())
    return parse_params(yaml.safe_load(merged))


def test_imagenet_preset_holds_the_papers_recipes(imagenet):
    p = imagenet
    # peak lr at each paper's global batch: SimCLR 4.8 and BYOL 3.2 at 4096 (LARS), DINO 0.002 at 1024, MAE 2.4e-3 at 4096
    for method, batch, lr, opt in (("simclr", 4096, 4.8, "lars"), ("byol", 4096, 3.2, "lars"), ("dino", 1024, 0.002, "adamw"),
                                   ("mae", 4096, 0.0024, "adamw")):
        cfg = p.pretrain_for(method)
        assert cfg.optimizer == opt and scaled_lr(cfg.lr, batch, cfg.lr_scaling) == pytest.approx(lr), method
    assert [p.pretrain_for(m).warmup_epochs for m in ("simclr", "byol", "dino", "mae")] == [10, 10, 10, 40]
    assert p.pretrain_for("simclr").weight_decay == 1e-6 and p.pretrain_for("byol").weight_decay == 1.5e-6
    assert p.method_params["byol"].base_tau == 0.996 and p.method_params["byol"].final_tau == 1.0
    assert p.data.image_size == 224 and p.data.channels == 3 and p.data.source == "imagefolder"
    assert p.encoder_for("simclr").arch == "resnet50" and p.encoder_for("dino").arch == "vit_small_patch16_224"
    assert p.encoder_for("mae").arch == "vit_base_patch16_224"
    dino = p.method_params["dino"]
    assert (dino.num_local_crops, dino.local_crop_size) == (10, 96) and dino.teacher_temp == 0.07
    assert p.augment.blur_p == [1.0, 0.1] and p.augment.solarize_p == [0.0, 0.2]


def test_imagenet_preset_crops_fit_its_vit(imagenet):
    # 224 px globals and 96 px locals both split into ViT-S/16's patches (on the meta device: no memory)
    with torch.device("meta"):
        enc = Encoder(imagenet.encoder_for("dino"), 3, [0.5] * 3, [0.25] * 3, imagenet.data.image_size)
    enc.check_input_size(imagenet.method_params["dino"].local_crop_size, "dino.local_crop_size")
    assert enc.backbone.grid == 14

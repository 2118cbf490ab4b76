import torch

from pipeline.config import EncoderParams, FinetuneParams
from pipeline.data.shards import load_split, read_manifest
from pipeline.eval.finetune import finetune
from pipeline.models.encoder import build_encoder


def test_finetune_learns_on_real_images(tiny_shards):
    torch.manual_seed(0)
    manifest = read_manifest(tiny_shards)
    enc = build_encoder(EncoderParams(width=8, layers=[1, 1]), manifest)
    cfg = FinetuneParams(epochs=6, batch_size=32, lr=0.4, encoder_lr_mult=1.0)
    res = finetune(enc, str(tiny_shards), 400, 10, load_split(tiny_shards, "test"), cfg, 0, torch.device("cpu"))
    assert res["top1"] > 0.35  # chance 0.10

"""Fine-tuning and the SGD probe under DDP: each rank trains on its slice of the global
batch, and the evaluate stage starts itself under torchrun when a protocol's
``nproc_per_node`` asks for more than one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from pipeline import dist
from pipeline.data.labelled import in_memory_batches

REPO = Path(__file__).resolve().parents[2]


def test_ranks_take_their_slice_of_each_global_batch(monkeypatch):
    """10 images, 2 per process, 2 processes: the ranks' batches side by side are the
    one-process run's batches of 4 (the last 2 images dropped on both)."""
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    labels = torch.arange(10)
    whole = list(in_memory_batches(images, labels, 4, seed=1)(0))
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(dist, "world_size", lambda: 2)
        monkeypatch.setattr(dist, "rank", lambda rank=rank: rank)
        per_rank.append(list(in_memory_batches(images, labels, 2, seed=1)(0)))
    assert len(whole) == len(per_rank[0]) == len(per_rank[1]) == 2
    for step, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([per_rank[0][step][1], per_rank[1][step][1]]), y)


def test_finetune_stage_under_torchrun(tiny_shards, tmp_path):
    from pipeline.config import EncoderParams
    from pipeline.shards.manifest import read_manifest
    from pipeline.modalities.encoders import build_encoder, save_encoder

    torch.manual_seed(0)
    encoder = tmp_path / "models" / "tiny" / "encoder.pt"
    encoder.parent.mkdir(parents=True)
    save_encoder(build_encoder(EncoderParams(layers=[1, 1], width=8), read_manifest(tiny_shards)), encoder)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["finetune"].update(epochs=3, batch_size=32, lr=2.0, encoder_lr_mult=1.0, nproc_per_node=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    res = subprocess.run([sys.executable, str(REPO / "stages" / "evaluate.py"), "finetune", "--params", "params.yaml",
                          "--encoder", str(encoder), "--shards", str(tiny_shards), "--metrics", "m.json", "--details", "d.json",
                          "--predictions", "p.json"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "torch.distributed.run --standalone --nproc-per-node=2" in res.stdout
    assert res.stdout.count("finetune@tiny: top1") == 1  # rank 0 alone reports and writes
    details = json.loads((tmp_path / "d.json").read_text())["result"]
    # chance 0.1; 600 // (32 x 2) = 9 steps an epoch (one process at batch 64 reached 0.38 here, 2 ranks 0.27:
    # BatchNorm over each rank's 32 images and other views)
    assert details["n_labels"] == 600 and details["top1"] > 0.2
    assert set(json.loads((tmp_path / "m.json").read_text())) == {"top1"}
    # rank 0 writes every test example's prediction (the test split is not split between ranks)
    preds = json.loads((tmp_path / "p.json").read_text())
    correct = [p == y for p, y in zip(preds["predictions"]["top1"], preds["labels"])]
    assert len(correct) == read_manifest(tiny_shards)["splits"]["test"]["count"] and sum(correct) / len(correct) == details["top1"]

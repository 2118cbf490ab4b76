"""Virtual streams in a real 2-process gloo group: each rank's persistent loader workers read
only the rank's streams; the ranks get disjoint samples and the same step count, and each
rank's batches are the ones the single-process simulation gives for it."""

from __future__ import annotations

import torch

from pipeline import dist
from pipeline.data.loader import EpochLoader
from pipeline.shards.read import stream_batches
from tests.data.test_streams import _folder, _ids
from tests.dist.group import WORLD, spawn


def _rank(rank: int, out: str, folder: str) -> dict:
    assert dist.world_size() == WORLD and dist.rank() == rank
    loader = EpochLoader(folder, "pretrain", 4, 16, workers=2, device=torch.device("cpu"))
    epochs = [[_ids(x) for x, _ in loader.epoch(seed)] for seed in (0, 1)]
    steps = torch.tensor([len(e) for e in epochs])
    torch.distributed.all_reduce(steps, op=torch.distributed.ReduceOp.MAX)  # every rank must agree
    return {"epochs": epochs, "max_steps": steps.tolist()}


def test_ranks_read_disjoint_streams(tmp_path):
    folder = _folder(tmp_path, 96, 8, 4)  # 8 streams of 12 samples: 4 per rank, 3 batches of 4 each
    ranks = spawn(_rank, tmp_path, str(folder), timeout=240)
    for epoch, seed in enumerate((0, 1)):
        per_rank = [r["epochs"][epoch] for r in ranks]
        assert [len(b) for b in per_rank] == [12, 12] == ranks[0]["max_steps"][epoch:epoch + 1] * 2
        ids = [i for batches in per_rank for b in batches for i in b]
        assert sorted(ids) == list(range(96))  # disjoint, and every sample once
        for r in range(WORLD):
            want = [_ids(x) for x, _ in stream_batches(folder, "pretrain", 4, 16, seed, rank=r, world_size=WORLD)]
            assert per_rank[r] == want

"""Virtual streams (data.streams): each rank x loader worker parses only its share, every
sample once per epoch, equal steps per rank, the batches independent of the worker count;
nothing but the first batch's samples read before it (verification while streaming)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.shards import streams, verify
from pipeline.data.loader import EpochLoader
from pipeline.modalities.image.codec import write_image_shards
from pipeline.shards.manifest import read_manifest
from pipeline.shards.read import epoch_steps, stream_batches
from pipeline.modalities.image.sources import ImageSet
from pipeline.errors import UserError

CPU = torch.device("cpu")


def _numbered(n: int) -> ImageSet:
    """``n`` 4x4 images whose first two pixels spell their number (so a batch names its samples)."""
    images = np.zeros((n, 4, 4, 1), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(n) // 256, np.arange(n) % 256
    return ImageSet(images, np.arange(n) % 2, ["a", "b"])


def _ids(x: torch.Tensor) -> list[int]:
    return (x[:, 0, 0, 0].long() * 256 + x[:, 0, 0, 1].long()).tolist()


def _folder(tmp_path: Path, n: int, n_streams: int, shard_size: int, name: str = "s") -> Path:
    out = tmp_path / name
    small = _numbered(n_streams)  # train/val/test: one sample per stream
    write_image_shards({"pretrain": _numbered(n), "train": small, "val": small, "test": small}, out, shard_size, source={},
                 n_streams=n_streams)
    return out


@pytest.fixture(scope="module")
def folder_128(tmp_path_factory) -> Path:
    """512 pretrain samples in 128 streams of 4 (one shard each)."""
    return _folder(tmp_path_factory.mktemp("streams"), 512, 128, 1000)


def test_shard_sizes_give_every_stream_the_same_count():
    for n, size, s in [(1000, 7, 8), (513, 1000, 128), (64, 1, 64), (10_000, 300, 1)]:
        sizes = streams.shard_sizes(n, size, s)
        per_stream = [sum(sizes[i] for i in range(j, len(sizes), s)) for j in range(s)]
        assert sum(sizes) == n and max(sizes) <= size and len(sizes) % s == 0
        assert max(per_stream) - min(per_stream) <= 1
    assert streams.shard_sizes(25, 10, 1) == [10, 10, 5]  # one stream: as ever


def test_16_ranks_x_8_workers_parse_their_share_once(folder_128):
    """Simulated: every (rank, worker) streams its part of the epoch in this process."""
    total, ranks, workers = 512, 16, 8
    seen, steps = [], []
    for rank in range(ranks):
        rank_batches = []
        for worker in range(workers):
            verify.IO.clear()
            rank_batches += list(stream_batches(folder_128, "pretrain", 2, 64, seed=5, rank=rank, world_size=ranks,
                                                batch_slice=(worker, workers), indexed=True))
            assert verify.IO["samples"] <= 1.1 * total / (ranks * workers)
        steps.append(len(rank_batches))
        assert sorted(k for k, _ in rank_batches) == list(range(len(rank_batches)))  # the rank's epoch, no gap
        seen += [i for _, (x, _) in rank_batches for i in _ids(x)]
    assert sorted(seen) == list(range(total))  # every sample exactly once
    assert set(steps) == {epoch_steps(folder_128, "pretrain", 2, ranks)} == {16}


@pytest.mark.parametrize("workers", [3, 8])
def test_simulated_workers_give_the_one_process_batches(folder_128, workers):
    """A rank's batches, put in order by their number, are the worker-less epoch's."""
    kw = dict(batch_size=4, shuffle_buffer=256, seed=7, rank=1, world_size=2)  # 4 per stream
    whole = list(stream_batches(folder_128, "pretrain", **kw))
    parts = sorted((b for w in range(workers) for b in stream_batches(folder_128, "pretrain", **kw, batch_slice=(w, workers),
                                                                      indexed=True)), key=lambda b: b[0])
    assert len(whole) == 64 and [k for k, _ in parts] == list(range(64))
    assert all(torch.equal(a[0], b[0]) for a, (_, b) in zip(whole, parts))
    other_seed = next(stream_batches(folder_128, "pretrain", **(kw | {"seed": 8})))
    assert not torch.equal(whole[0][0], other_seed[0])


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on 2 cores: on purpose
def test_persistent_workers_give_the_one_process_epochs(tmp_path):
    """Real DataLoader worker processes, kept across epochs: each epoch, and a resume inside
    one, is the one-process path's."""
    folder = _folder(tmp_path, 96, 8, 4)  # 8 streams of 12 samples, 3 shards each
    run = lambda loader, seed, skip=0: [x for x, _ in loader.epoch(seed, skip)]  # noqa: E731
    one = EpochLoader(folder, "pretrain", 4, 16, workers=0, device=CPU)
    three = EpochLoader(folder, "pretrain", 4, 16, workers=3, device=CPU)
    for seed, skip in [(0, 0), (1, 0), (1, 5)]:
        want = run(one, seed, skip)
        assert len(want) == 24 - skip
        assert all(torch.equal(a, b) for a, b in zip(want, run(three, seed, skip), strict=True))


@pytest.mark.parametrize("n_streams", [1, 4])
def test_bytes_read_before_the_first_batch_do_not_grow_with_the_data(tmp_path, n_streams):
    """No up-front hashing: 4x the data, the same bytes read to the first batch (within 10%)."""
    read = []
    for n in (256, 1024):
        folder = _folder(tmp_path, n, n_streams, 16, name=f"n{n}")
        verify.IO.clear()
        next(EpochLoader(folder, "pretrain", 8, 32, workers=0, device=CPU).epoch(seed=0))
        read.append(verify.IO["bytes"])
    assert 0 < read[1] <= 1.1 * read[0]


def test_corrupt_shard_fails_at_its_end_naming_it(tmp_path):
    folder = _folder(tmp_path, 64, 4, 8)
    name = sorted(read_manifest(folder)["splits"]["pretrain"]["shards"])[2]
    data = bytearray((folder / name).read_bytes())
    data[-2000] ^= 0xFF  # in the end-of-archive padding: no sample shows it, only the hash
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{name} is corrupt .*dvc repro -f shard"):
        list(stream_batches(folder, "pretrain", 4, 8, seed=0))


def test_streams_must_divide_among_the_ranks(folder_128):
    with pytest.raises(UserError, match="data.streams=128 .* not a multiple of the 3 processes"):
        next(stream_batches(folder_128, "pretrain", 2, 8, seed=0, rank=0, world_size=3))

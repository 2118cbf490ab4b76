"""Two views at 224x224 from 256-px JPEG shards through a DataLoader, same worker count: our path
vs torchvision.transforms.v2 per image in the workers.

    python benchmarks/views_224.py [--images 2048] [--workers 1,2] [--rounds 3] [--steps 24]

Makes ``--images`` photos (``shard.py``'s generator: crops of scikit-learn's sample photos,
300-500 px) and runs the real ``shard`` stage on them (stored at 256, JPEG). Then, per
worker count, batches of 64 images as two views each, BYOL's recipe at 224 (scale 0.08-1,
jitter 0.4/0.4/0.2/0.1, blur 1.0/0.1, solarize 0/0.2; ``augment.py``'s case):

- ours: the pretraining loader (``epoch_batches``: workers decode uint8 batches), then the
  batched ``ViewMaker`` in this process, as pretraining does;
- torchvision: a WebDataset over the same shards in a DataLoader whose workers decode each
  JPEG with PIL (as our workers do) and apply torchvision v2 per PIL image, two views, the
  way its users write it.

Interleaved round by round (this machine is shared and noisy): images/s over ``--steps``
batches after the first (worker start-up; at most a batch or two more were made meanwhile,
ready when timing starts: keep ``--steps`` large), medians, the ratio to torchvision at the same worker count,
and images/s per core (this machine's cores, which workers and this process share).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
import torchvision.transforms.v2 as T
import webdataset as wds
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BATCH, SIZE = 64, 224


def _torchvision_pil_views(cfg):
    """augment.py's torchvision recipe, taking PIL images (ToImage before the float conversion)."""
    from augment import torchvision_views

    return [T.Compose([*tv.transforms[:-1], T.ToImage(), tv.transforms[-1]]) for tv in torchvision_views(cfg, SIZE)]


class _TwoViews:
    def __init__(self, views):
        self.views = views

    def __call__(self, sample: dict):
        from PIL import Image

        with Image.open(io.BytesIO(sample["jpg"])) as img:
            img = img.convert("RGB")
        return self.views[0](img), self.views[1](img)


def torchvision_batches(paths: list[str], views, workers: int, seed: int):
    ds = (wds.WebDataset(paths, shardshuffle=False, nodesplitter=None, workersplitter=wds.split_by_worker, empty_check=False)
          .shuffle(256, rng=random.Random(seed)).map(_TwoViews(views)).batched(BATCH, partial=False))
    return iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers))


def main() -> None:
    from augment import cases
    from input_path import _rate  # images/s over the batches after the first

    from pipeline.config import load_params
    from pipeline.modalities.image.views import ViewMaker
    from pipeline.data.loader import epoch_batches
    from pipeline.shards.verify import shard_paths
    from shard import generate, run_stage

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=24)
    args = ap.parse_args()
    cfg = [c for name, _, c, size in cases() if size == SIZE][0]
    params = load_params(REPO / "params.yaml")
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "photos", args.images, args.images)
        run_stage(tmp / "photos", tmp / "shards", 2, SimpleNamespace(store_size=256, format="jpeg", shard_size=128), tmp)
        paths = shard_paths(tmp / "shards", "pretrain")
        vm, tv = ViewMaker(cfg, params.seed, cpu), _torchvision_pil_views(cfg)

        def ours_step(batch) -> None:
            vm(batch[0], out_size=SIZE, view=0), vm(batch[0], out_size=SIZE, view=1)

        def tv_step(batch) -> None:  # the workers made the views
            pass

        workers = [int(w) for w in args.workers.split(",")]
        rates = {(kind, w): [] for w in workers for kind in ("ours", "torchvision")}
        for r in range(args.rounds):
            for w in workers:
                ours = epoch_batches(tmp / "shards", "pretrain", BATCH, 256, r, w, cpu)
                rates[("ours", w)].append(_rate(ours, args.steps, ours_step))
                ours.close()
                rates[("torchvision", w)].append(_rate(torchvision_batches(paths, tv, w, r), args.steps, tv_step))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    cores = len(os.sched_getaffinity(0))
    print(f"{args.images} photos stored at 256 px JPEG, batch {BATCH}, two {SIZE}x{SIZE} views per image (BYOL's pair); "
          f"{cores} cores, torch threads {torch.get_num_threads()} in this process; {args.rounds} rounds x {args.steps} "
          "batches, medians\n")
    print("| loader workers | views made by | images/s | images/s per core | vs torchvision |\n|---:|---|---:|---:|---:|")
    for w in workers:
        base = statistics.median(rates[("torchvision", w)])
        for kind, label in (("ours", "ViewMaker, batched, in the training process"), ("torchvision", "torchvision v2 per PIL image, in the workers")):
            med = statistics.median(rates[(kind, w)])
            print(f"| {w} | {label} | {med:,.1f} | {med / cores:,.1f} | {med / base:.2f}x |")


if __name__ == "__main__":
    with recorded("views_224"):
        main()

"""SimCLR pretraining throughput on a GPU, views included, beside published anchors.

    python benchmarks/gpu.py                 # on a CUDA host (a lent GPU); prints a markdown table
    python benchmarks/gpu.py --smoke         # a few steps of tiny sizes on any device: checks the script runs

Two settings, each with the pipeline's own pieces: uint8 batches in pinned host memory
copied non-blocking to the GPU, two views per image made there in batches (``ViewMaker``),
a torchvision ResNet (fc removed) + 2-layer projection head, ``nt_xent``, SGD; bfloat16
autocast and channels_last on CUDA. Timed after warm-up with CUDA events over the steps,
medians of repeats:
- ResNet-18 at 32x32 (CIFAR-like), batch 512: views/s (anchor: about 8.4k views/s for
  ResNet-18 SimCLR at 32x32 on an A100);
- ResNet-50 at 224x224 (stored at 256), batch 128: images/s (anchor: about 2,470 img/s for
  ResNet-50 supervised training with AMP on an A100; SimCLR does two forward/backward
  passes per image, so compare views/s with it).
Decoding is not included (JPEG decoding at this rate needs DataLoader workers or nvjpeg;
``benchmarks/input_path.py`` measures our loader). Not run by CI or the tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class SimCLRNet(nn.Module):
    def __init__(self, arch: str, small_images: bool):
        super().__init__()
        self.backbone = getattr(torchvision.models, arch)(weights=None)
        if small_images:  # the CIFAR stem: 3x3 conv, no max-pool (SimCLR's CIFAR-10 recipe)
            self.backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.backbone.maxpool = nn.Identity()
        dim = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()
        self.head = nn.Sequential(nn.Linear(dim, 2048), nn.ReLU(inplace=True), nn.Linear(2048, 128))

    def forward(self, x):
        return self.head(self.backbone(x))


def run(arch: str, stored: int, out: int, batch: int, steps: int, repeats: int, device: torch.device) -> list[float]:
    """views/s of each repeat."""
    from pipeline.config import AugmentParams
    from pipeline.data.augment import ViewMaker
    from pipeline.methods.simclr import nt_xent

    cuda = device.type == "cuda"
    model = SimCLRNet(arch, small_images=out <= 64).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6)
    views = ViewMaker(AugmentParams(crop_scale=[0.08, 1.0]), 0, device)
    host = torch.randint(0, 256, (batch, 3, stored, stored), dtype=torch.uint8)
    host = host.pin_memory() if cuda else host

    def step():
        x = host.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            v1, v2 = views(x, out), views(x, out)
            if cuda:
                v1, v2 = v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)
            loss = nt_xent(model(v1).float(), model(v2).float(), 0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up: cuDNN autotuning, allocator
        step()
    rates = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
        rates.append(2 * batch * steps / (time.perf_counter() - t0))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, a few steps, any device")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    settings = [("resnet18", 32, 32, 512, 20, "8.4k views/s (A100)"), ("resnet50", 256, 224, 128, 10, "2,470 img/s supervised AMP (A100)")]
    if args.smoke:
        settings = [("resnet18", 32, 32, 8, 2, "-"), ("resnet50", 72, 64, 4, 1, "-")]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}, bf16 autocast + channels_last: {device.type == 'cuda'}\n")
    print("| model | input | batch | views/s (median) | images/s | anchor |\n|---|---|---:|---:|---:|---|")
    for arch, stored, out, batch, steps, anchor in settings:
        rates = run(arch, stored, out, batch, steps, 2 if args.smoke else args.repeats, device)
        med = statistics.median(rates)
        print(f"| {arch} | {out}x{out} (stored {stored}) | {batch} | {med:,.0f} | {med / 2:,.0f} | {anchor} |", flush=True)


if __name__ == "__main__":
    main()

"""The ResNet in NCHW vs channels_last (NHWC): what ``SmallResNet`` keeping its conv weights
in channels_last buys on this machine.

    python benchmarks/memory_format.py [--rounds 7]

Three workloads, each run in both formats on the same weights and inputs, interleaved round
by round (the machine is shared and noisy); medians over rounds and the ratio:

- the default SimCLR pretraining step (params.yaml: 28x28 Fashion-MNIST shards in
  data/shards, batch 256, views + forward + backward + optimizer step);
- frozen features at 28x28 (batch 1,024, what every evaluation stage extracts);
- a ResNet-18 (layers [2, 2, 2, 2], width 64, 3x3 stride-2 stem) forward + backward at
  224x224, batch 16, 3 channels: a user's larger images on a CPU host.

The NCHW side is the same module after ``use_channels_last(False)``.
Prints a markdown table (benchmarks/results/memory_format.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from pipeline.config import load_params
    from pipeline.shards.manifest import read_manifest
    from pipeline.shards.read import stream_batches
    from pipeline.registry import METHODS
    from pipeline.modalities.encoders import build_encoder
    from pipeline.models.resnet import SmallResNet

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--shards", default=str(REPO / "data" / "shards"))
    args = ap.parse_args()
    torch.manual_seed(0)
    params = load_params(REPO / "params.yaml")
    manifest = read_manifest(args.shards)
    cpu = torch.device("cpu")
    batch = next(stream_batches(args.shards, "pretrain", params.pretrain.batch_size, 1, 0, rank=0, world_size=1))[0]

    def simclr(nchw: bool):
        torch.manual_seed(0)
        method = METHODS.get("simclr")(build_encoder(params.encoder_for("simclr"), manifest),
                                        params.method_params["simclr"], params.augment, 0, cpu)
        method.prepare(batch)
        if nchw:
            method.encoder.backbone.use_channels_last(False)
        opt = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)

        def step():
            loss = method.training_step(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    def features(nchw: bool):
        torch.manual_seed(0)
        encoder = build_encoder(params.encoder_for("simclr"), manifest).eval()
        if nchw:
            encoder.backbone.use_channels_last(False)
        x = torch.rand(1024, manifest["channels"], 28, 28)
        return lambda: encoder(x)

    def resnet18_224(nchw: bool):
        torch.manual_seed(0)
        net = SmallResNet(3, [2, 2, 2, 2], width=64, stem_stride=2)
        if nchw:
            net.use_channels_last(False)
        x = torch.rand(16, 3, 224, 224)

        def step():
            net.zero_grad()
            net(x).square().mean().backward()
        return step

    workloads = {
        f"SimCLR step, 28x28, batch {len(batch)}": (simclr, len(batch)),
        "features, 28x28, batch 1,024": (features, 1024),
        "ResNet-18 fwd+bwd, 224x224, batch 16": (resnet18_224, 16),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} interleaved rounds, medians\n")
    print("| workload | NCHW img/s | channels_last img/s | channels_last / NCHW |")
    print("|---|---:|---:|---:|")
    for name, (make, n) in workloads.items():
        fns = {"nchw": make(True), "cl": make(False)}
        times: dict[str, list[float]] = {k: [] for k in fns}
        with torch.no_grad() if name.startswith("features") else torch.enable_grad():
            for fn in fns.values():
                fn()  # warm-up: allocator and kernel selection
            for _ in range(args.rounds):
                for k, fn in fns.items():
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
        rate = {k: n / statistics.median(v) for k, v in times.items()}
        fmt = (lambda r: f"{r:,.0f}") if min(rate.values()) >= 100 else (lambda r: f"{r:.2f}")
        print(f"| {name} | {fmt(rate['nchw'])} | {fmt(rate['cl'])} | {rate['cl'] / rate['nchw']:.2f}x |", flush=True)


if __name__ == "__main__":
    with recorded("memory_format"):
        main()

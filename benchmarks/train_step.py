"""The default SimCLR training step at 28x28 (views, forward, loss, backward, optimizer step)
against lightly's loop and against the encoder's own forward + backward, on the same encoder.

    python benchmarks/train_step.py [--rounds 7] [--steps 4]

Three loops over the same 256 decoded pretrain images (uint8, from data/shards; run
`dvc repro shard` first), each with no DataLoader workers, as the default pretrain stage
runs on a CPU (`benchmarks/input_path.py`: at 28x28 workers do not speed the step up):

- ours: ``SimCLR.training_step`` (batched views on the device, one forward of both views,
  NT-Xent), backward, SGD step;
- lightly's loop, as its SimCLR example writes it: per image, PIL image -> lightly's
  ``SimCLRTransform`` (our crop scale, flip and jitter probabilities, no blur, Fashion-MNIST's
  mean/std) -> two view batches, the backbone of the same encoder on each, lightly's
  ``SimCLRProjectionHead`` and ``NTXentLoss`` (same temperature), backward, SGD step;
- the ceiling: the encoder and projector forward + backward on two ready-made view batches
  (no views, no loss, no optimizer step).

lightly is not a dependency of the pipeline (``pip install --no-deps --target DIR lightly
lightning-utilities`` and ``PYTHONPATH=DIR``); without it that row is left out. Rounds
interleave the loops (the machine is shared and noisy); images/s counts source images
(two views each); the table gives medians and ratios.
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

try:
    import lightly
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
except ImportError:  # optional
    lightly = None


def main(args: argparse.Namespace) -> None:
    import torchvision.transforms.v2.functional as TF

    from pipeline.config import load_params
    from pipeline.shards.manifest import read_manifest
    from pipeline.shards.read import stream_batches
    from pipeline.registry import METHODS
    from pipeline.modalities.encoders import build_encoder

    params = load_params(REPO / "params.yaml")
    manifest = read_manifest(args.shards)
    cpu = torch.device("cpu")
    p, aug, sim = params.pretrain, params.augment, params.method_params["simclr"]
    images = next(stream_batches(args.shards, "pretrain", p.batch_size, 1, 0, rank=0, world_size=1))[0]

    def sgd(module: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(module.parameters(), lr=0.01, momentum=p.momentum, weight_decay=p.weight_decay)

    def ours():
        torch.manual_seed(0)
        method = METHODS.get("simclr")(build_encoder(params.encoder_for("simclr"), manifest), sim, aug, 0, cpu)
        method.prepare(images)
        opt = sgd(method)

        def step():
            loss = method.training_step(images)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    def ceiling():
        torch.manual_seed(0)
        method = METHODS.get("simclr")(build_encoder(params.encoder_for("simclr"), manifest), sim, aug, 0, cpu)
        views = method.two_views(images).detach()  # [2N, C, H, W], made once

        def step():
            method.zero_grad()
            method.projector(method.encoder(views)).square().mean().backward()
        return step

    def lightly_loop():
        torch.manual_seed(0)
        encoder = build_encoder(params.encoder_for("simclr"), manifest)
        backbone = encoder.backbone  # lightly's transform normalises; the backbone takes its tensors
        head = SimCLRProjectionHead(encoder.feature_dim, sim.hidden_dim, sim.projection_dim)
        model = torch.nn.Sequential(backbone, head)
        transform = SimCLRTransform(input_size=images.shape[-1], min_scale=aug.crop_scale[0], gaussian_blur=0.0,
                                    hf_prob=aug.hflip, cj_prob=aug.jitter_p, cj_bright=aug.brightness,
                                    cj_contrast=aug.contrast, cj_sat=aug.saturation, cj_hue=aug.hue,
                                    random_gray_scale=aug.grayscale_p,
                                    normalize={"mean": manifest["mean"], "std": manifest["std"]})
        criterion = NTXentLoss(temperature=sim.temperature)
        opt = sgd(model)

        def step():
            # what a torchvision dataset's __getitem__ does per image, then lightly's transform
            pairs = [transform(TF.to_pil_image(img)) for img in images]
            x0 = torch.stack([a for a, _ in pairs]).contiguous(memory_format=torch.channels_last)
            x1 = torch.stack([b for _, b in pairs]).contiguous(memory_format=torch.channels_last)
            loss = criterion(model(x0), model(x1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    loops = {"ours: SimCLR.training_step + backward + SGD step": ours()}
    if lightly is not None:
        loops["lightly's loop: SimCLRTransform per PIL image, NTXentLoss"] = lightly_loop()
    loops["encoder + projector forward + backward, views made beforehand"] = ceiling()
    times: dict[str, list[float]] = {k: [] for k in loops}
    for fn in loops.values():
        fn()  # warm-up: allocator and kernel selection
    for _ in range(args.rounds):
        for k, fn in loops.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            times[k].append((time.perf_counter() - t0) / args.steps)
    rate = {k: len(images) / statistics.median(v) for k, v in times.items()}
    ours_rate = rate[next(iter(loops))]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads"
          + (f", lightly {lightly.__version__}" if lightly is not None else ", lightly not installed")
          + f"; batch {len(images)} ({images.shape[1]}x{images.shape[2]}x{images.shape[3]}), two views each; "
          f"{args.rounds} interleaved rounds of {args.steps} steps, medians\n")
    print("| loop | images/s | ours / this |\n|---|---:|---:|")
    for k, r in rate.items():
        print(f"| {k} | {r:,.0f} | {ours_rate / r:.2f}x |", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--shards", default=str(REPO / "data" / "shards"))
    with recorded("train_step"):
        main(ap.parse_args())

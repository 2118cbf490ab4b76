"""Throughput of the two-view augmentation, one CPU thread: the batched ViewMaker vs
torchvision.transforms.v2 per image (vs kornia.augmentation batched, and lightly's
SimCLRTransform / BYOLTransform per PIL image, when importable).

    python benchmarks/augment.py [--repeats 5]

lightly is not a dependency of the pipeline; its transforms need only ``lightning_utilities``
beside it: ``pip install --no-deps --target DIR lightly lightning-utilities`` and
``PYTHONPATH=DIR``. lightly is run as its users call it (its own recipe defaults, ImageNet
normalisation included), at our sizes and crop scales, on PIL images made before timing.

Two views per image; images/s counts source images (each gives two views). Repeats are
interleaved across the methods; the table gives medians and the ratio to torchvision.
28x28: 1-channel uint8 batch of 256, the default recipe (no blur, as SimCLR on CIFAR).
224: 3-channel uint8 256x256 batch of 64 cropped to 224, BYOL's pair (blur 1.0 / 0.1,
solarize 0 / 0.2), scale (0.08, 1), jitter (0.4, 0.4, 0.2, 0.1).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision.transforms.v2 as T

from pipeline.config import AugmentParams
from pipeline.modalities.image.views import ViewMaker, blur_kernel_size
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/

try:
    import kornia
    import kornia.augmentation as K
except ImportError:  # optional
    kornia = None

try:
    import lightly
    from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform, SimCLRTransform
except ImportError:  # optional
    lightly = None


def cases():
    small = AugmentParams()
    big = AugmentParams(crop_scale=[0.08, 1.0], saturation=0.2, blur_p=[1.0, 0.1], solarize_p=[0.0, 0.2])
    yield "28x28 gray, batch 256", (torch.rand(256, 1, 28, 28) * 255).to(torch.uint8), small, 28
    yield "224 RGB (from 256), batch 64", (torch.rand(64, 3, 256, 256) * 255).to(torch.uint8), big, 224


def per_view(p: list[float], view: int) -> float:
    return p[min(view, len(p) - 1)]


def torchvision_views(cfg: AugmentParams, size: int):
    out = []
    for view in range(2):
        ops = [
            T.RandomResizedCrop(size, scale=tuple(cfg.crop_scale), ratio=tuple(cfg.crop_ratio), antialias=True),
            T.RandomHorizontalFlip(cfg.hflip),
            T.RandomApply([T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.jitter_p),
            T.RandomGrayscale(cfg.grayscale_p),
        ]
        k = blur_kernel_size(size)
        if per_view(cfg.blur_p, view) > 0:
            ops.append(T.RandomApply([T.GaussianBlur(k, (0.1, 2.0))], p=per_view(cfg.blur_p, view)))
        if per_view(cfg.solarize_p, view) > 0:
            ops.append(T.RandomSolarize(128, p=per_view(cfg.solarize_p, view)))
        ops.append(T.ToDtype(torch.float32, scale=True))
        out.append(T.Compose(ops))
    return out


def kornia_views(cfg: AugmentParams, size: int, channels: int):
    out = []
    for view in range(2):
        ops = [
            K.RandomResizedCrop((size, size), scale=tuple(cfg.crop_scale), ratio=tuple(cfg.crop_ratio)),
            K.RandomHorizontalFlip(p=cfg.hflip),
        ]
        if channels == 3:
            ops += [K.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=cfg.jitter_p),
                    K.RandomGrayscale(p=cfg.grayscale_p)]
        else:
            ops += [K.ColorJitter(cfg.brightness, cfg.contrast, 0.0, 0.0, p=cfg.jitter_p)]
        k = blur_kernel_size(size)
        if per_view(cfg.blur_p, view) > 0:
            ops.append(K.RandomGaussianBlur((k, k), (0.1, 2.0), p=per_view(cfg.blur_p, view)))
        if per_view(cfg.solarize_p, view) > 0:
            ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=per_view(cfg.solarize_p, view)))
        out.append(torch.nn.Sequential(*ops))
    return out


def lightly_views(cfg: AugmentParams, size: int):
    """lightly's transform for the case: SimCLR's at 28x28 (no blur, as our default recipe),
    BYOL's asymmetric pair at 224."""
    if size == 28:
        return SimCLRTransform(input_size=size, min_scale=cfg.crop_scale[0], gaussian_blur=0.0, hf_prob=cfg.hflip,
                               cj_prob=cfg.jitter_p, random_gray_scale=cfg.grayscale_p)
    return BYOLTransform(view_1_transform=BYOLView1Transform(input_size=size, min_scale=cfg.crop_scale[0]),
                         view_2_transform=BYOLView2Transform(input_size=size, min_scale=cfg.crop_scale[0]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    for name, images, cfg, size in cases():
        vm = ViewMaker(cfg, 0, torch.device("cpu"))
        tv = torchvision_views(cfg, size)
        methods = {
            "ViewMaker (batched)": lambda: (vm(images, out_size=size, view=0), vm(images, out_size=size, view=1)),
            "torchvision v2 (per image)": lambda: [tv[v](img) for img in images for v in range(2)],
        }
        if kornia is not None:
            ko = kornia_views(cfg, size, images.shape[1])

            def run_kornia(ko=ko, images=images):
                x = images.float().div_(255.0)
                return ko[0](x), ko[1](x)
            methods["kornia (batched)"] = run_kornia
        if lightly is not None:
            lt = lightly_views(cfg, size)
            pils = [T.functional.to_pil_image(img) for img in images]
            methods["lightly (per PIL image)"] = lambda lt=lt, pils=pils: [lt(p) for p in pils]
        times = {m: [] for m in methods}
        for m, fn in methods.items():  # warm-up
            fn()
        for _ in range(args.repeats):
            for m, fn in methods.items():
                t0 = time.perf_counter()
                fn()
                times[m].append(time.perf_counter() - t0)
        tv_rate = len(images) / statistics.median(times["torchvision v2 (per image)"])
        for m, ts in times.items():
            rate = len(images) / statistics.median(ts)
            rows.append((name, m, rate, rate / tv_rate))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}"
          + (f", kornia {kornia.__version__}" if kornia is not None else ", kornia not installed")
          + (f", lightly {lightly.__version__}" if lightly is not None else ", lightly not installed"))
    print("\n| case | method | images/s (2 views each), median | vs torchvision |")
    print("|---|---|---:|---:|")
    for name, m, rate, ratio in rows:
        print(f"| {name} | {m} | {rate:,.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    with recorded("augment"):
        main()

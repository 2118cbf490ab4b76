"""What sync-free views cost on the CPU: ViewMaker's colour jitter and blur by ``torch.where``
(every op on every image, no host sync) against the gather version it replaced (``nonzero``
per jitter position and op, ``x[idx] = blur(x[idx])``: 17-19 host syncs per view on a GPU),
side by side on the same draws, one thread, repeats interleaved; medians and ratios.

    python benchmarks/views_sync.py [--repeats 7] [--smoke]

The two give the same views bit for bit (checked here before timing). On a GPU the syncs
stall the launch queue; on a CPU there is no queue to stall, so this measures only the
extra arithmetic of computing each jitter op for every image.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pipeline.config import AugmentParams
from pipeline.modalities.image import views as A
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/


def _gather_jitter(x, factors, order):
    """The replaced colour jitter: the images of one op gathered by ``nonzero`` (a host sync each)."""
    y = x.clone()
    rgb = x.shape[1] == 3
    for pos in range(4):
        for op in range(4):
            if op in (A.SATURATION, A.HUE) and not rgb:
                continue
            idx = (order[:, pos] == op).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            z, f = y[idx], factors[idx, op].view(-1, 1, 1, 1)
            if op == A.BRIGHTNESS:
                z = (z * f).clamp_(0.0, 1.0)
            elif op == A.CONTRAST:
                z = A._blend(z, (A._gray(z) if rgb else z).mean(dim=(1, 2, 3), keepdim=True), f)
            elif op == A.SATURATION:
                z = A._blend(z, A._gray(z), f)
            else:
                z = A.adjust_hue(z, f.view(-1))
            y[idx] = z
    return y


def _tensor_bounds_jitter(n, cfg, gen, device):
    """The replaced jitter draws: bounds as tensors made with ``torch.tensor(..., device=)`` (a
    blocking copy each on a GPU)."""
    lows = torch.tensor([max(0.0, 1 - cfg.brightness), max(0.0, 1 - cfg.contrast),
                         max(0.0, 1 - cfg.saturation), -cfg.hue], device=device)
    highs = torch.tensor([1 + cfg.brightness, 1 + cfg.contrast, 1 + cfg.saturation, cfg.hue], device=device)
    factors = torch.rand(n, 4, generator=gen, device=device) * (highs - lows) + lows
    order = torch.rand(n, 4, generator=gen, device=device).argsort(dim=1)
    return factors, order


def _gather_view(vm: A.ViewMaker, images: torch.Tensor, view: int, out_size: int) -> torch.Tensor:
    """ViewMaker's view as before: the same draws, jitter and blur on gathered subsets."""
    cfg, gen = vm.cfg, vm.gen
    x = A.random_resized_crop(A.to_float(images), tuple(cfg.crop_scale), tuple(cfg.crop_ratio), cfg.hflip, gen, out_size)
    n, dev = x.shape[0], x.device
    apply = torch.rand(n, generator=gen, device=dev) < cfg.jitter_p
    factors, order = _tensor_bounds_jitter(n, cfg, gen, dev)
    idx = apply.nonzero().squeeze(1)
    y = x.clamp(0.0, 1.0)
    if idx.numel():
        y[idx] = A._cpu_chunked(_gather_jitter, y[idx], factors[idx], order[idx])
    to_gray = torch.rand(n, generator=gen, device=dev) < cfg.grayscale_p
    if x.shape[1] == 3 and cfg.grayscale_p > 0:
        y = torch.where(to_gray.view(n, 1, 1, 1), A._gray(y).expand_as(y), y)
    x = y
    blur_p, sol_p = A._per_view(cfg.blur_p, view), A._per_view(cfg.solarize_p, view)
    if blur_p > 0:
        blur = torch.rand(n, generator=gen, device=dev) < blur_p
        sigma = A._uniform(n, *A.BLUR_SIGMA, gen, dev)
        idx = blur.nonzero().squeeze(1)
        if idx.numel():
            x[idx] = A.gaussian_blur(x[idx], sigma[idx], A.blur_kernel_size(x.shape[-1]))
    if sol_p > 0:
        sol = torch.rand(n, generator=gen, device=dev) < sol_p
        x = torch.where(sol.view(n, 1, 1, 1), A.solarize(x), x)
    return x


def cases(smoke: bool):
    small = AugmentParams()
    big = AugmentParams(crop_scale=[0.08, 1.0], saturation=0.2, blur_p=[1.0, 0.1], solarize_p=[0.0, 0.2])
    n, side, out = (8, 40, 32) if smoke else (64, 256, 224)
    m = 32 if smoke else 256
    yield f"28x28 gray, batch {m} (the CPU default)", (torch.rand(m, 1, 28, 28) * 255).to(torch.uint8), small, 28
    yield f"{out} RGB (from {side}), batch {n}, BYOL's views", (torch.rand(n, 3, side, side) * 255).to(torch.uint8), big, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat (the test suite runs this)")
    args = ap.parse_args(argv)
    repeats = 1 if args.smoke else args.repeats
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads 1, two views per image, medians of {repeats} interleaved repeats\n")
    print("| case | views | images/s (2 views each) | vs gather |")
    print("|---|---|---:|---:|")
    for name, images, cfg, out in cases(args.smoke):
        fns = {"gather (nonzero, before)": lambda vm, v: _gather_view(vm, images, v, out),
               "torch.where (sync-free, now)": lambda vm, v: vm(images, out_size=out, view=v)}
        ref = [fns["gather (nonzero, before)"](A.ViewMaker(cfg, 0, torch.device("cpu")), v) for v in range(2)]
        new = [fns["torch.where (sync-free, now)"](A.ViewMaker(cfg, 0, torch.device("cpu")), v) for v in range(2)]
        assert all(torch.equal(a, b) for a, b in zip(ref, new)), "the sync-free views differ from the gather views"
        times = {k: [] for k in fns}
        for _ in range(repeats):
            for key, fn in fns.items():  # interleaved: both see the same machine load
                vm = A.ViewMaker(cfg, 0, torch.device("cpu"))
                t0 = time.perf_counter()
                for v in range(2):
                    fn(vm, v)
                times[key].append(time.perf_counter() - t0)
        base = statistics.median(times["gather (nonzero, before)"])
        for key, ts in times.items():
            med = statistics.median(ts)
            print(f"| {name} | {key} | {len(images) / med:,.0f} | {base / med:.2f}x |")


if __name__ == "__main__":
    import sys

    if "--smoke" in sys.argv:
        main()
    else:
        with recorded("views_sync"):
            main()

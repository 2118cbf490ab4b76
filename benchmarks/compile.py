"""``pretrain.compile``: SimCLR training steps with the encoder eager vs ``torch.compile``d
(inductor), on the CPU, side by side: the same method, batches and optimizer; steps timed
after warm-up (the compile happens in the warm-up), repeats interleaved; medians, ratio and
the one-off compile time.

    python benchmarks/compile.py [--repeats 5] [--steps 5] [--smoke]

``--smoke`` (the test suite's size) compiles with the ``eager`` backend: it traces the graph
without generating code, so it checks the wiring in seconds and times nothing meaningful.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pipeline.config import AugmentParams, EncoderParams
from pipeline.methods.simclr import SimCLR
from pipeline.modalities.encoders import build_encoder
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/


def _method(arch: dict, compiled: bool, backend: str) -> tuple[SimCLR, torch.optim.Optimizer]:
    torch.manual_seed(0)
    manifest = {"channels": 1, "image_size": 28, "mean": [0.286], "std": [0.353]}
    method = SimCLR(build_encoder(EncoderParams(**arch), manifest), SimCLR.Params(), AugmentParams(), 0, torch.device("cpu"))
    if compiled:
        method.encoder.compile(backend=backend)  # as fit does with pretrain.compile: true (in place)
    return method, torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9)


def _steps(method, opt, images, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = method(images)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, eager backend (the test suite runs this)")
    args = ap.parse_args(argv)
    repeats, steps, batch = (1, 1, 8) if args.smoke else (args.repeats, args.steps, 128)
    backend = "eager" if args.smoke else "inductor"
    arch = {"layers": [1, 1], "width": 8} if args.smoke else {"layers": [1, 1, 1, 1], "width": 32, "stem_stride": 2}
    torch.set_num_threads(torch.get_num_threads())
    images = (torch.rand(batch, 1, 28, 28) * 255).to(torch.uint8)
    runs = {}
    for name, compiled in (("eager", False), (f"torch.compile ({backend})", True)):
        method, opt = _method(arch, compiled, backend)
        t0 = time.perf_counter()
        _steps(method, opt, images, 2)  # warm-up: compiles here
        runs[name] = {"method": method, "opt": opt, "warmup": time.perf_counter() - t0, "times": []}
    for _ in range(repeats):
        for run in runs.values():  # interleaved: both see the same machine load
            run["times"].append(_steps(run["method"], run["opt"], images, steps))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, SimCLR on the small ResNet {arch}, batch {batch} "
          f"(2 views), {steps} steps x {repeats} interleaved repeats\n")
    print("| encoder | images/s, median | vs eager | warm-up (2 steps, incl. compile) s |")
    print("|---|---:|---:|---:|")
    base = statistics.median(runs["eager"]["times"])
    for name, run in runs.items():
        med = statistics.median(run["times"])
        print(f"| {name} | {batch * steps / med:,.0f} | {base / med:.2f}x | {run['warmup']:.1f} |")


if __name__ == "__main__":
    import sys

    if "--smoke" in sys.argv:
        main()
    else:
        with recorded("compile"):
            main()

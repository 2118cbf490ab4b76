"""DVC stage `pretrain@<method>`: self-supervised pretraining of the encoder
(``pipeline.train.pretrain``), with the kNN monitor (``pipeline.eval.monitor``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import dist
from pipeline.config import load_params
from pipeline.shards.manifest import read_manifest
from pipeline.errors import exit_on_user_error, output_lock
from pipeline.eval.monitor import KnnMonitor
from pipeline.registry import METHODS
from pipeline.train.device import check_device
from pipeline.train.pretrain import PretrainRun, check_modality, check_world, run_pretraining


@exit_on_user_error(kept="no output was written (a checkpoint.pt in --out, if any, resumes the run)")
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--preset", help="a preset merged over --params, e.g. text (presets/<name>.yaml)")
    ap.add_argument("--method", required=True)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--out", required=True, help="folder for encoder.pt and checkpoint.pt")
    ap.add_argument("--metrics", required=True, help="headline metrics (what `dvc metrics diff` shows)")
    ap.add_argument("--timing", required=True, help="wall time and throughput (volatile, kept out of the metrics)")
    ap.add_argument("--live", required=True, help="DVCLive folder for the training curves")
    args = ap.parse_args()
    params = load_params(args.params, args.preset)
    method_cls = METHODS.get(args.method)
    manifest = read_manifest(args.shards)
    check_modality(method_cls, args.shards, manifest)
    run = PretrainRun(args.method, args.shards, Path(args.out), args.metrics, args.timing, Path(args.live), __file__)
    with output_lock(args.out):  # a second run in the same folder refuses (the ranks of a torchrun share it)
        _run(run, params, method_cls, manifest)


def _run(run: PretrainRun, params, method_cls, manifest: dict) -> None:
    p = params.pretrain_for(run.method)
    check_device(p.device)  # device: cuda without a usable GPU stops here, before any work (one line, status 2)
    if p.nproc_per_node > 1 and not dist.launched_by_torchrun():
        check_world(p, run, manifest, p.nproc_per_node)
        # bad params and data were refused above, in this one process (one line, status 2)
        sys.exit(dist.relaunch_under_torchrun(p.nproc_per_node, __file__, "pretrain"))
    dist.init_from_env()
    try:
        run_pretraining(run, params, method_cls, manifest,
                        make_monitor=lambda device: KnnMonitor(run.shards, p, params.protocol_params["knn"].temperature, device))
    finally:
        dist.shutdown()


if __name__ == "__main__":
    main()

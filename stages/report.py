"""DVC stage `report`: reports/report.md and its figures from the committed metric files."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import load_params
from pipeline.shards.manifest import read_manifest
from pipeline.errors import exit_on_user_error, output_lock
from pipeline.outputs import StagedOutputs
from pipeline.report.markdown import build_report


@exit_on_user_error
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--preset", help="a preset merged over --params, e.g. text (presets/<name>.yaml)")
    ap.add_argument("--metrics-dir", default="metrics")
    ap.add_argument("--shards", required=True)
    ap.add_argument("--live-root", default="dvclive/pretrain")
    ap.add_argument("--out", default="reports/report.md")
    args = ap.parse_args()
    params = load_params(args.params, args.preset)
    manifest = read_manifest(args.shards)
    out = Path(args.out)
    with output_lock(out), StagedOutputs() as staged:  # report and figures appear together, or not at all
        build_report(params, manifest, Path(args.metrics_dir), Path(args.live_root), staged.file(out),
                     staged.dir(out.parent / "figures"))
    print(f"wrote {out} and {out.parent / 'figures'}/")


if __name__ == "__main__":
    main()

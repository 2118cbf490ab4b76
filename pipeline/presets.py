"""Presets: overlay files in ``presets/`` holding only what differs from ``params.yaml``.

    python -m pipeline.presets gpu            # merge presets/gpu.yaml into params.yaml (comments kept)
    python -m pipeline.presets gpu --print    # show the merged params instead

Mappings merge key by key; lists and scalars replace. ``params.yaml`` stays the one source
of every other value, so a preset cannot drift from it. The result is validated before it
is written; then ``dvc repro`` (or ``dvc exp run``) runs it and ``dvc params diff`` shows it.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from ruamel.yaml import YAML

from pipeline.config import PRESETS, merge, parse_params
from pipeline.errors import UserError, exit_on_user_error

def _yaml() -> YAML:
    y = YAML()  # round trip: comments, key order, flow lists and anchors/aliases survive
    y.preserve_quotes = True
    y.width = 4096
    y.representer.add_representer(type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def apply(params_text: str, overlay_text: str) -> str:
    """``params.yaml`` text with the overlay merged in (validated)."""
    y = _yaml()
    base, overlay = y.load(params_text), y.load(overlay_text) or {}
    merge(base, overlay)
    out = io.StringIO()
    y.dump(base, out)
    parse_params(YAML(typ="safe").load(out.getvalue()), "params.yaml with the preset")
    return out.getvalue()


@exit_on_user_error
def main() -> None:
    names = sorted(p.stem for p in PRESETS.glob("*.yaml"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", help=f"one of {names}")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--print", action="store_true", help="print the merged params instead of writing them")
    args = ap.parse_args()
    if args.preset not in names:
        raise UserError(f"unknown preset {args.preset!r}; valid presets are {names} (files in {PRESETS})")
    params = Path(args.params)
    if not params.is_file():
        raise UserError(f"{params} not found; run from the repository root or pass --params")
    merged = apply(params.read_text(), (PRESETS / f"{args.preset}.yaml").read_text())
    if args.print:
        sys.stdout.write(merged)
    else:
        params.write_text(merged)
        print(f"merged presets/{args.preset}.yaml into {params}; review with 'dvc params diff', run with 'dvc repro'")


if __name__ == "__main__":
    main()

"""What `bash scripts/run.sh all` puts on disk before it runs: the venv of constraints.txt's pinned
stack and the Debian packages (datasets and corpora). The README quotes this file.

    python tools/install_size.py --venv .venv [--out benchmarks/results/install_size.json]

Sizes in bytes: the venv as installed (``du``-style, files only; the PyPI wheels are compressed,
so the download is smaller), its largest packages, and each Debian package's download and
installed size from ``apt-cache show``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

APT = ["dataset-fashion-mnist", "fortunes", "fortunes-de", "fortunes-es", "fortunes-it"]  # scripts/run.sh's data


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def apt_sizes(pkg: str) -> dict:
    out = subprocess.run(["apt-cache", "show", pkg], capture_output=True, text=True).stdout
    fields = dict(line.split(": ", 1) for line in out.split("\n\n")[0].splitlines() if ": " in line)
    return {"download": int(fields.get("Size", 0)), "installed": int(fields.get("Installed-Size", 0)) * 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", default=".venv")
    ap.add_argument("--out", default="benchmarks/results/install_size.json")
    args = ap.parse_args()
    site = next(Path(args.venv).glob("lib/python3*/site-packages"))
    packages = {p.name: tree_bytes(p) for p in site.iterdir() if p.is_dir() and not p.name.endswith(".dist-info")}
    result = {
        "venv_bytes": tree_bytes(Path(args.venv)),
        "largest_packages_bytes": dict(sorted(packages.items(), key=lambda kv: -kv[1])[:8]),
        "apt": {pkg: apt_sizes(pkg) for pkg in APT},
    }
    result["apt_download_bytes"] = sum(v["download"] for v in result["apt"].values())
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"venv {result['venv_bytes'] / 1e9:.1f} GB, apt downloads {result['apt_download_bytes'] / 1e6:.0f} MB -> {args.out}")


if __name__ == "__main__":
    main()

"""Keep what a benchmark prints: ``with recorded("augment"): main()`` tees stdout into
``benchmarks/results/augment.md`` (the command, date and machine above it), written only when
the benchmark finishes; ``benchmarks/report.py`` collects these into reports/benchmarks.md."""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s: str) -> int:
        for stream in self.streams:
            stream.write(s)
        return len(s)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def machine() -> str:
    """The CPU model beside the core count, e.g. "2 CPUs, AMD EPYC (family 26, model 2), AVX-512":
    the same code runs twice as fast on some CPU models as on others, and rounds differently
    where their vector units differ, so a recorded number means little without it."""
    info = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    name = info.get("model name", "unknown CPU")
    if "cpu family" in info:
        name += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    flags = info.get("flags", "").split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    return f"{os.cpu_count()} CPUs, {name}" + (f", {isa}" if isa else "")


@contextlib.contextmanager
def recorded(name: str):
    buf = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, buf)):
        yield
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    command = shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])  # name may be a preset's
    header = f"`{command}`: {when}, {machine()}, load average {load} at the end\n\n"
    (RESULTS / f"{name}.md").write_text(header + buf.getvalue().strip() + "\n")

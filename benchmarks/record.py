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


@contextlib.contextmanager
def recorded(name: str):
    buf = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, buf)):
        yield
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    command = shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])  # name may be a preset's
    header = f"`{command}`: {when}, {os.cpu_count()} CPUs, load average {load} at the end\n\n"
    (RESULTS / f"{name}.md").write_text(header + buf.getvalue().strip() + "\n")

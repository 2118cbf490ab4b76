"""Figures whose PNG bytes depend only on the numbers drawn: matplotlib's non-interactive
backend, no version string in the file. Used by the report's own figures
(``pipeline/report/figures.py``) and by the protocols' (``Protocol.figures``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

META = {"Software": None}  # no version string in the PNG: same numbers, same bytes


def save(fig, out: Path, rect: tuple[float, float, float, float] | None = None) -> None:
    """Lay ``fig`` out (within ``rect`` of the figure, e.g. to leave room for a legend), write it
    to ``out`` as a PNG at 100 dpi and close it."""
    fig.tight_layout(rect=rect)
    fig.savefig(out, dpi=100, metadata=META)
    plt.close(fig)

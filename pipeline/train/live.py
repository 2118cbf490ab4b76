"""DVCLive training curves, written while pretraining runs (``LiveCurves``)."""

from __future__ import annotations

import csv
from pathlib import Path


class LiveCurves:
    """DVCLive curves written while training runs, one point per epoch, at the optimizer
    step that ended it (the x axis is the real step; ``epoch`` is a curve of its own).

    The folder is written in place, not staged with the other outputs: it is a ``cache:
    false`` plots folder that nothing downstream reads, and seeing it grow during a run (and
    what a failed or diverged run did before it stopped) is its purpose. The headline
    outputs stay all-or-nothing. A fresh run clears it (DVCLive's default); a resumed run
    continues it with ``resume=True`` after dropping any point past the checkpoint it resumes
    from (epochs logged after the last checkpoint are trained and logged again), so a
    resumed run draws the same curves as an uninterrupted one; when the folder is gone, the
    checkpoint's history draws the earlier points. (dvc.yaml marks the folder ``persist``, so
    ``dvc repro`` does not delete it before restarting a killed run.) Nothing is created
    before the first epoch ends (a run that fails earlier leaves no folder). Main rank only.
    """

    KEYS = ("loss", "lr", "knn_top1")

    def __init__(self, folder: Path, steps_per_epoch: int):
        self.folder, self.steps_per_epoch, self.live = folder, steps_per_epoch, None

    def log(self, history: list[dict]) -> None:
        if self.live is None:
            self.live = self._open(history)
        self._point(history[-1])

    def _point(self, stats: dict) -> None:
        self.live.step = stats["epoch"] * self.steps_per_epoch
        self.live.log_metric("epoch", stats["epoch"])
        for key in self.KEYS:
            if key in stats:
                self.live.log_metric(key, stats[key])
        self.live.next_step()  # writes the point and the summary now

    def _open(self, history: list[dict]):
        from dvclive import Live

        earlier = history[:-1]  # epochs of a checkpoint this run resumed from
        metrics = self.folder / "plots" / "metrics"
        resume = bool(earlier) and (metrics / "loss.tsv").is_file()
        if resume:  # the killed run's curves: keep them up to the checkpoint
            _drop_points_after(metrics, earlier[-1]["epoch"] * self.steps_per_epoch)
        live = Live(dir=str(self.folder), save_dvc_exp=False, dvcyaml=None, report=None, resume=resume)
        if earlier and not resume:  # resumed, but its curves are gone: draw them from the checkpoint's history
            self.live = live
            for stats in earlier:
                self._point(stats)
        return live

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


def _drop_points_after(metrics_dir: Path, last_step: int) -> None:
    """Keep only the points at steps <= ``last_step`` in DVCLive's ``.tsv`` files."""
    for path in sorted(metrics_dir.rglob("*.tsv")) if metrics_dir.is_dir() else []:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        kept = rows[:1] + [r for r in rows[1:] if int(float(r[0])) <= last_step]
        with open(path, "w", newline="") as f:
            csv.writer(f, delimiter="\t", lineterminator="\n").writerows(kept)

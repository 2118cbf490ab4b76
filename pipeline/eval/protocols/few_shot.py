"""Few-shot episodes on the test split's frozen features (nearest prototype and/or logistic
regression on the support set; the same episodes for every classifier)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

import numpy as np
from pydantic import Field

from pipeline import config
from pipeline.config import Strict
from pipeline.dist import default_workers
from pipeline.errors import UserError
from pipeline.eval.algorithms.few_shot import few_shot
from pipeline.eval.checks import per_class
from pipeline.eval.protocol import EvalContext, Protocol, register


def few_shot_order(key: str) -> tuple[int, int]:
    """ "5way_10shot" -> (5, 10), so columns read 1, 5, 10 shots rather than string order."""
    ways, shots = key.split("way_")
    return int(ways), int(shots.removesuffix("shot"))


def _headline_classifier(result: dict) -> str:
    return "prototype" if "prototype" in result else next(iter(result))


@register
class FewShot(Protocol):
    name = "few_shot"
    order = 30

    class Params(Strict):
        ways: list[Union[int, Literal["all"]]] = Field(default_factory=lambda: [5, "all"], min_length=1)
        shots: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
        queries: int = Field(15, ge=1)
        episodes: int = Field(600, ge=1)
        max_ways: int = Field(100, ge=2)  # "all"-way episodes draw at most this many classes (1000-way: 100 sampled per episode)
        classifiers: list[Literal["prototype", "logreg"]] = Field(default_factory=lambda: ["prototype", "logreg"], min_length=1)

    def check(self, params: config.Params, manifest: dict) -> None:
        """``few_shot.ways`` against the test split's classes, ``shots + queries`` against its smallest class."""
        fs = params.protocol_params[self.name]
        present = per_class(manifest, "test")
        n_classes = len(present)
        for ways in fs.ways:
            if ways == "all":
                continue
            if ways < 2:
                raise UserError(f"few_shot.ways: {ways} is not a number of ways; use integers >= 2 or 'all'")
            if ways > n_classes:
                raise UserError(
                    f"few_shot.ways: {ways}-way episodes need {ways} classes, but the test split has {n_classes}; "
                    f"use ways of at most {n_classes} (or 'all')"
                )
        if not present:
            return  # check_classes reports it
        smallest_class, smallest = min(present.items(), key=lambda item: item[1])
        if fs.queries > smallest - 1:
            raise UserError(
                f"few_shot.queries: {fs.queries} queries plus at least 1 shot need {fs.queries + 1} test images per class, "
                f"but the smallest test class ('{smallest_class}') has {smallest}; lower few_shot.queries to at most "
                f"{smallest - 1} or use more test images (data.test_size / data.test_fraction)"
            )
        for k in fs.shots:
            if k < 1 or k + fs.queries > smallest:
                raise UserError(
                    f"few_shot.shots: {k}-shot episodes with few_shot.queries={fs.queries} need {k + fs.queries} test images "
                    f"per class, but the smallest test class ('{smallest_class}') has {smallest}; use shots between 1 and "
                    f"{smallest - fs.queries}, lower few_shot.queries, or use more test images (data.test_size / data.test_fraction)"
                )

    def run(self, ctx: EvalContext) -> dict:
        """``{classifier: {"<N>way_<K>shot": {mean, ci95}}}`` for every configured classifier and N."""
        feats, labels = ctx.features("test")
        fs = ctx.params.protocol_params[self.name]
        workers = default_workers(None)  # logistic regression: one process per core
        n_classes = len(np.unique(labels))
        out = {}
        for clf in fs.classifiers:
            out[clf] = {}
            for ways in fs.ways:
                if ways == "all" and n_classes > fs.max_ways:  # ImageNet-1k: 100 of the 1,000 classes drawn per episode
                    ways = fs.max_ways
                out[clf].update(few_shot(feats, labels, ways, fs.shots, fs.queries, fs.episodes, ctx.seed, classifier=clf,
                                         workers=workers))
        return out

    def headline(self, result: dict) -> dict:
        """The smallest-way episodes of one classifier (prototype when run): mean and CI per K."""
        clf = _headline_classifier(result)
        keys = sorted(result[clf], key=few_shot_order)
        ways = few_shot_order(keys[0])[0]
        out = {}
        for k in (k for k in keys if few_shot_order(k)[0] == ways):
            out[f"{clf}_{k}"] = result[clf][k]["mean"]
            out[f"{clf}_{k}_ci95"] = result[clf][k]["ci95"]
        return out

    def summary(self, result: dict) -> dict:
        protos = result.get("prototype", {})
        five_way = sorted((k for k in protos if k.startswith("5way")), key=few_shot_order)
        return {f"few-shot {k.replace('way_', '-way ').replace('shot', '-shot')}": protos[k]["mean"] for k in five_way}

    def section(self, results: dict, baseline_of: dict, params: config.Params) -> list[str]:
        results = {name: r[self.name] for name, r in results.items() if self.name in r}
        fs = params.protocol_params[self.name]
        lines = ["## Few-shot (mean % +- 95% CI)", ""]
        for clf in fs.classifiers:
            keys = sorted(next(iter(results.values()))[clf], key=few_shot_order)
            lines += [f"Classifier: **{clf}**", "", "| encoder | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
            for name, res in results.items():
                cells = " | ".join(f"{100 * res[clf][k]['mean']:.1f} +- {100 * res[clf][k]['ci95']:.1f}" for k in keys)
                lines.append(f"| {name} | {cells} |")
            lines.append("")
        lines.append(f"{fs.episodes} episodes per setting, {fs.queries} queries per class, "
                     f"seed {params.seed}; every classifier sees the same episodes.")
        return lines + ["", "![few-shot](figures/few_shot.png)", ""]

    def figures(self, results: dict, baseline_of: dict, params: config.Params, manifest: dict, out_dir: Path) -> None:
        protos = {name: r[self.name]["prototype"] for name, r in results.items() if "prototype" in r.get(self.name, {})}
        few_shot_curve(protos, out_dir / "few_shot.png")


def few_shot_curve(results: dict[str, dict], out: Path) -> None:
    """Few-shot accuracy (with 95% CI) against K, one line per encoder: ``results`` maps each
    encoder to its nearest-prototype results ``{"<N>way_<K>shot": {mean, ci95}}``."""
    from pipeline.eval.plotting import plt, save

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, fs in results.items():
        ks = sorted((k for k in fs if k.startswith("5way")), key=few_shot_order)
        x = [few_shot_order(k)[1] for k in ks]
        ax.errorbar(x, [100 * fs[k]["mean"] for k in ks], yerr=[100 * fs[k]["ci95"] for k in ks], marker="o", capsize=3, label=name)
    ax.set_xlabel("shots per class (K)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("5-way few-shot, nearest prototype")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, out)

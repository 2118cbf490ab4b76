"""Few-shot episodes on the test split's frozen features (nearest prototype and/or logistic
regression on the support set; the same episodes for every classifier)."""

from __future__ import annotations

import numpy as np

from pipeline import config
from pipeline.config import FewShotParams
from pipeline.dist import default_workers
from pipeline.eval.checks import check_few_shot
from pipeline.eval.algorithms.few_shot import few_shot
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
    Params = FewShotParams
    order = 30

    def check(self, params: config.Params, manifest: dict) -> None:
        check_few_shot(params, manifest)

    def run(self, ctx: EvalContext) -> dict:
        """``{classifier: {"<N>way_<K>shot": {mean, ci95}}}`` for every configured classifier and N."""
        feats, labels = ctx.features("test")
        fs = ctx.params.few_shot
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
        lines = ["## Few-shot (mean % +- 95% CI)", ""]
        for clf in params.few_shot.classifiers:
            keys = sorted(next(iter(results.values()))[clf], key=few_shot_order)
            lines += [f"Classifier: **{clf}**", "", "| encoder | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
            for name, res in results.items():
                cells = " | ".join(f"{100 * res[clf][k]['mean']:.1f} +- {100 * res[clf][k]['ci95']:.1f}" for k in keys)
                lines.append(f"| {name} | {cells} |")
            lines.append("")
        lines.append(f"{params.few_shot.episodes} episodes per setting, {params.few_shot.queries} queries per class, "
                     f"seed {params.seed}; every classifier sees the same episodes.")
        return lines + ["", "![few-shot](figures/few_shot.png)", ""]

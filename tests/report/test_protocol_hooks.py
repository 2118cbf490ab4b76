"""The report asks the registered protocols for its verdict numbers (``Protocol.verdict``) and
their figures (``Protocol.figures``) instead of naming protocols itself."""

from pipeline.registry import PROTOCOLS
from pipeline.report.markdown import verdicts

SHOTS = {"5way_1shot": {"mean": 0.4, "ci95": 0.02}, "5way_5shot": {"mean": 0.5, "ci95": 0.02}}
FS = {"prototype": SHOTS, "logreg": SHOTS}


def _results(linear: float, knn: float) -> dict:
    return {"linear_eval": {"linear": {"top1": linear}}, "knn": {"knn20_top1": knn, "knn200_top1": knn - 0.1}}


def test_verdict_claims_the_first_protocols_number_and_compares_the_later_ones_with_the_random_init():
    results = {"simclr": _results(0.80, 0.60), "raw pixels (baseline)": _results(0.75, 0.70),
               "random init (baseline)": _results(0.70, 0.65)}
    # kNN-20 below the random init's: no "beats", though the linear probe beats both baselines
    assert verdicts(results, {"simclr": "random init (baseline)"}) == [
        "- **simclr** linear top-1 80.0% does NOT beat raw pixels 75.0% and its own architecture at random init 70.0% "
        "(kNN-20 65.0% vs 60.0%)."]
    # without a knn20 (knn.ks without 20), only the linear probe is compared
    del results["simclr"]["knn"]["knn20_top1"]
    assert verdicts(results, {"simclr": "random init (baseline)"}) == [
        "- **simclr** linear top-1 80.0% beats raw pixels 75.0% and its own architecture at random init 70.0%."]


def test_protocols_draw_the_figures_their_sections_link(tmp_path, params):
    results = {"simclr": {"few_shot": FS}, "raw pixels (baseline)": {"few_shot": FS}}
    for name in PROTOCOLS.names():
        PROTOCOLS.get(name).figures(results, {}, params, {"classes": ["a", "b"]}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few_shot.png"]  # no label-efficiency curve, no map: no figure
    assert "![few-shot](figures/few_shot.png)" in PROTOCOLS.get("few_shot").section(results, {}, params)

import json

import pandas as pd

from pipeline.report.tables import summary_table, to_markdown


def _write(d, stage, method, obj):
    (d / stage).mkdir(parents=True, exist_ok=True)
    (d / stage / f"{method}.json").write_text(json.dumps(obj))


def _lin(top1):
    return {"linear": {"top1": top1}, "knn200_top1": 0.5, "knn20_top1": 0.6}


def test_summary_table_rows_and_columns(tmp_path):
    fs = {"prototype": {"5way_1shot": {"mean": 0.5, "ci95": 0.01}, "10way_1shot": {"mean": 0.3, "ci95": 0.01}}}
    _write(tmp_path, "linear-eval", "simclr", _lin(0.86))
    _write(tmp_path, "few-shot", "simclr", fs)
    _write(tmp_path, "transfer", "simclr", {"digits": {"top1": 0.9}})
    _write(tmp_path, "finetune", "simclr", {"top1": 0.88})
    base = {"few_shot": fs, "transfer": {"digits": {"top1": 0.8}}}
    baselines = {"random_init": _lin(0.79) | base, "raw_pixels": _lin(0.84) | base, "supervised_scratch": {"top1": 0.87}}
    df = summary_table(tmp_path, ["simclr"], baselines)
    assert list(df.index) == ["simclr", "random init (baseline)", "raw pixels (baseline)"]
    assert list(df.columns)[:3] == ["linear top-1", "kNN-20 top-1", "kNN-200 top-1"]
    assert "few-shot 5-way 1-shot" in df.columns and not any("10-way" in c for c in df.columns)
    assert df.loc["random init (baseline)", "finetune top-1"] == 0.87
    assert pd.isna(df.loc["raw pixels (baseline)", "finetune top-1"])
    md = to_markdown(df)
    assert "| simclr | 86.0 | 60.0 | 50.0 |" in md and "| - |" in md

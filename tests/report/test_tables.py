import json

import pandas as pd
import pytest

from pipeline.errors import UserError
from pipeline.report.tables import load_results, summary_table, to_markdown
from tests.report.details import write_details

FS = {"prototype": {"5way_1shot": {"mean": 0.5, "ci95": 0.01}, "10way_1shot": {"mean": 0.3, "ci95": 0.01}}}


def _encoder(d, name, top1, finetune=None):
    write_details(d, "linear_eval", name, {"linear": {"top1": top1}})
    write_details(d, "knn", name, {"knn20_top1": 0.6, "knn200_top1": 0.5})
    write_details(d, "few_shot", name, FS)
    write_details(d, "transfer", name, {"digits": {"top1": 0.9}})
    write_details(d, "finetune", name, {"top1": finetune} if finetune is not None else {"not_applicable": "no encoder"})


def test_summary_table_rows_and_columns(tmp_path, params):
    params = params.model_copy(update={"protocols": ["linear_eval", "knn", "finetune", "few_shot", "transfer"]})
    _encoder(tmp_path, "simclr", 0.86, 0.88)
    _encoder(tmp_path, "random_init", 0.79, 0.87)
    _encoder(tmp_path, "raw_pixels", 0.84)
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "simclr.json").write_text(json.dumps({"loss": 1.0, "knn_top1": 0.7}))
    results, baseline_of = load_results(tmp_path, params)
    assert baseline_of == {"simclr": "random init (baseline)"}
    assert "finetune" not in results["raw pixels (baseline)"]  # not applicable: left out
    df = summary_table(results)
    assert list(df.index) == ["simclr", "raw pixels (baseline)", "random init (baseline)"]
    assert list(df.columns)[:3] == ["linear top-1", "kNN-20 top-1", "kNN-200 top-1"]
    assert "few-shot 5-way 1-shot" in df.columns and not any("10-way" in c for c in df.columns)
    assert df.loc["random init (baseline)", "finetune top-1"] == 0.87
    assert pd.isna(df.loc["raw pixels (baseline)", "finetune top-1"])
    md = to_markdown(df)
    assert "| simclr | 86.0 | 60.0 | 50.0 |" in md and "| - |" in md


def test_a_missing_result_names_the_stage_to_run(tmp_path, params):
    params = params.model_copy(update={"protocols": ["linear_eval"]})
    with pytest.raises(UserError, match=r"linear_eval/simclr.details.json is missing; run 'dvc repro evaluate@simclr-linear_eval'"):
        load_results(tmp_path, params)

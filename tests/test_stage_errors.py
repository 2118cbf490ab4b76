"""Bad input gets a clear error, a non-zero exit, and leaves no output that looks valid."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _stage(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages" / script), *args], cwd=cwd, capture_output=True, text=True)


def _params(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_typo_in_params_exits_2_and_writes_nothing(tmp_path):
    path = _params(tmp_path, lambda r: r["data"].update(shard_sise=10))
    res = _stage("shard.py", "--params", str(path), "--out", str(tmp_path / "shards"), cwd=tmp_path)
    assert res.returncode == 2
    assert "data.shard_sise: unknown key" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "shards").exists()


def test_unknown_method_lists_valid(tmp_path):
    path = _params(tmp_path, lambda r: r.update(methods=["simclr", "nope"]))
    res = _stage("pretrain.py", "--params", str(path), "--method", "nope", "--shards", "x", "--out", str(tmp_path / "m"),
                 "--metrics", str(tmp_path / "m.json"), "--timing", str(tmp_path / "t.json"), "--live", str(tmp_path / "live"),
                 cwd=tmp_path)
    assert res.returncode == 2 and "unknown method(s) ['nope']" in res.stderr and "simclr" in res.stderr
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "m").exists()


def test_missing_dataset_names_the_fix(tmp_path):
    path = _params(tmp_path, lambda r: r["data"].update(root=str(tmp_path / "nowhere")))
    res = _stage("shard.py", "--params", str(path), "--out", str(tmp_path / "shards"), cwd=tmp_path)
    assert res.returncode == 2 and "apt-get install dataset-fashion-mnist" in res.stderr
    assert not (tmp_path / "shards" / "manifest.json").exists()


def test_corrupt_shard_fails_evaluation_without_metrics(tiny_shards, tmp_path):
    from pipeline.config import EncoderParams
    from pipeline.shards.manifest import read_manifest
    from pipeline.modalities.encoders import build_encoder, save_encoder

    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    save_encoder(build_encoder(EncoderParams(width=8), read_manifest(shards)), tmp_path / "enc.pt")
    tar = shards / "test-000000.tar"
    tar.write_bytes(tar.read_bytes()[:5000])  # truncated
    params = _params(tmp_path, lambda r: r["few_shot"].update(shots=[1, 5], queries=5))  # fits the tiny test split
    res = _stage("evaluate.py", "few_shot", "--params", str(params), "--encoder", str(tmp_path / "enc.pt"),
                 "--shards", str(shards), "--metrics", str(tmp_path / "fs.json"), "--details", str(tmp_path / "d.json"), cwd=tmp_path)
    assert res.returncode == 2 and "test-000000.tar is corrupt" in res.stderr
    assert not (tmp_path / "fs.json").exists()


def test_wrong_type_in_params_exits_2_and_writes_nothing(tmp_path):
    path = _params(tmp_path, lambda r: r["pretrain"].update(epochs="ten"))
    res = _stage("shard.py", "--params", str(path), "--out", str(tmp_path / "shards"), cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "pretrain.epochs: Input should be a valid integer (got 'ten')" in res.stderr
    assert not (tmp_path / "shards").exists()


def test_finetune_batch_larger_than_the_train_split_names_the_key(tiny_shards, tmp_path):
    from pipeline.config import EncoderParams
    from pipeline.shards.manifest import read_manifest
    from pipeline.modalities.encoders import build_encoder, save_encoder

    save_encoder(build_encoder(EncoderParams(width=8), read_manifest(tiny_shards)), tmp_path / "enc.pt")
    path = _params(tmp_path, lambda r: r["finetune"].update(batch_size=4096))
    res = _stage("evaluate.py", "finetune", "--params", str(path), "--encoder", str(tmp_path / "enc.pt"),
                 "--shards", str(tiny_shards), "--metrics", str(tmp_path / "ft.json"), "--details", str(tmp_path / "d.json"),
                 cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "finetune.batch_size=4096 is larger than the images available" in res.stderr
    assert not (tmp_path / "ft.json").exists() and not list(tmp_path.glob("*.tmp"))

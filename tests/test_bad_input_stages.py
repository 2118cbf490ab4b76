"""The last bad inputs of issue 29 through the stage scripts: a params section that is not a
mapping, a missing or non-text corpus, non-finite manifest statistics, a torchrun rank's user
error, and DVC's "is empty" warning. Each: exit 2 and one line naming the problem and the fix
(a warning and exit 0 where the run can go on), no traceback, nothing written."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _params(tmp_path: Path, edit=None) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    if edit:
        edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(args: list[str], tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def _one_line(res: subprocess.CompletedProcess, status: int, start: str) -> None:
    assert res.returncode == status, res.stderr
    assert res.stderr.startswith(start) and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr


def test_a_method_section_that_is_not_a_mapping(tmp_path):
    params = _params(tmp_path, lambda r: r.update(simclr=[1, 2]))
    res = _run([str(REPO / "stages/shard.py"), "--params", str(params), "--out", "shards"], tmp_path)
    _one_line(res, 2, f"error: {params}: section 'simclr' must be a mapping of its keys (e.g. 'simclr: {{key: value}}'), "
                      "got list [1, 2]; fix it or remove the section")
    assert not (tmp_path / "shards").exists()


def test_a_protocol_section_that_is_a_string(default_params_dict):
    from pipeline.config import parse_params
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="section 'knn' must be a mapping of its keys .*got str 'x'"):
        parse_params(default_params_dict | {"knn": "x"})


def _fake_dpkg(tmp_path: Path, listing: list[Path] | None) -> dict:
    """A ``dpkg`` first on PATH: ``-L fortunes`` lists ``listing``, or fails as for a package
    that is not installed (None)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    body = ("cat <<'EOF'\n" + "\n".join(map(str, listing)) + "\nEOF\n" if listing is not None else
            "echo \"dpkg-query: package '$2' is not installed\" >&2\nexit 1\n")
    (bin_dir / "dpkg").write_text("#!/bin/sh\n" + body)
    (bin_dir / "dpkg").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_a_missing_corpus_package_names_the_apt_package(tmp_path):
    res = _run([str(REPO / "stages/shard.py"), "--params", str(REPO / "params.yaml"), "--preset", "text", "--out", "shards"],
               tmp_path, _fake_dpkg(tmp_path, None))
    _one_line(res, 2, "error: the Debian package 'fortunes' is not installed (the text corpus reads its files); install it "
                      "with 'sudo apt-get install fortunes'")
    assert not (tmp_path / "shards").exists()


def test_a_corpus_file_that_is_not_text_is_skipped_with_a_warning(tmp_path):
    """Two categories of text and one of 20 KB of random bytes: the text-shard stage warns naming
    the file and the count, and shards the two text categories (it dropped the file silently).
    The corpus folder stands in for /usr/share/games/fortunes (``FORTUNE_DIR``, set before the
    stage script runs)."""
    corpus = tmp_path / "fortunes"
    corpus.mkdir()
    for name in ("cats", "dogs"):
        (corpus / name).write_text("".join(f"{name} saying number {i} is here\n%\n" for i in range(40)))
    (corpus / "noise").write_bytes(os.urandom(20_000).replace(b"%", b"x") + b"\n%\n" + os.urandom(20_000).replace(b"%", b"x") + b"\n%\n")
    env = _fake_dpkg(tmp_path, [corpus / "cats", corpus / "dogs", corpus / "noise"])
    from pipeline.config import merge

    def text_preset(raw):  # presets/text.yaml merged over params.yaml, sized for 80 entries
        merge(raw, yaml.safe_load((REPO / "presets/text.yaml").read_text()))
        raw["text"].update(min_class_count=2, vocab_size=300)
        raw["data"].update(val_size=8, train_size=None, shard_size=50)

    params = _params(tmp_path, text_preset)
    launch = (f"import runpy, sys; import pipeline.modalities.text.sources as t; t.FORTUNE_DIR = {str(corpus)!r}; "
              f"sys.argv = ['shard.py', '--params', {str(params)!r}, '--out', 'shards']; "
              f"runpy.run_path({str(REPO / 'stages/shard.py')!r}, run_name='__main__')")
    res = _run(["-c", launch], tmp_path, env | {"PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    assert f"warning: skipped 2 of 2 entries of {corpus}/noise: not UTF-8 text" in res.stderr
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["classes"] == ["cats", "dogs"]


@pytest.fixture
def nan_shards(tiny_shards, tmp_path) -> Path:
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    (shards / "manifest.json").write_text(json.dumps(manifest | {"mean": [math.nan]}))
    return shards


def test_non_finite_manifest_statistics_are_refused_when_read(nan_shards, tmp_path):
    """NaN statistics failed pretraining at step 1 as a non-finite loss, blamed on the learning rate."""
    res = _run([str(REPO / "stages/pretrain.py"), "--params", str(REPO / "params.yaml"), "--method", "simclr", "--shards",
                str(nan_shards), "--out", "models/simclr", "--metrics", "m.json", "--timing", "t.json", "--live", "live"], tmp_path)
    _one_line(res, 2, f"error: {nan_shards}/manifest.json: 'mean' is [nan], not 1 finite number(s) (the pretrain images' "
                      "statistics); re-create the shards with 'dvc repro -f shard'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_a_rank_user_error_under_torchrun_is_the_parent_s_one_line(tiny_shards, tmp_path):
    """A truncated checkpoint with ``pretrain.nproc_per_node: 2``: both ranks refuse it; the parent
    prints the line once and exits 2 (it was torchrun's ChildFailedError traceback and status 1)."""
    (tmp_path / "models" / "simclr").mkdir(parents=True)
    (tmp_path / "models" / "simclr" / "checkpoint.pt").write_bytes(b"PK\x03\x04truncated")
    params = _params(tmp_path, lambda r: (r["encoder"].update(layers=[1], width=8),
                                          r["pretrain"].update(nproc_per_node=2, batch_size=64, epochs=1)))
    res = _run([str(REPO / "stages/pretrain.py"), "--params", str(params), "--method", "simclr", "--shards", str(tiny_shards),
                "--out", "models/simclr", "--metrics", "m.json", "--timing", "t.json", "--live", "live"], tmp_path)
    assert "torch.distributed.run --standalone --nproc-per-node=2" in res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert res.returncode == 2 and "Traceback" not in res.stderr and "ChildFailedError" not in res.stderr, res.stderr
    assert "failed (exitcode" not in res.stderr, res.stderr  # the agent's own log line of the failure
    assert len(errors) == 1 and errors[0].startswith("error: models/simclr/checkpoint.pt is not a checkpoint"), res.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "models/simclr/checkpoint.pt", "params.yaml"]


def test_dvc_does_not_warn_that_a_dependency_is_empty(tmp_path):
    """Every file that dvc.yaml names as a dependency, in a DVC project of its own: `dvc repro`
    warned "'pipeline/__init__.py' is empty." on every stage run."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    deps = sorted({d for s in stages.values() for d in s.get("deps", []) if "$" not in d and (REPO / d).is_file()})
    assert "pipeline/__init__.py" in deps and "pipeline/eval/__init__.py" in deps
    for dep in deps:
        (tmp_path / dep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / dep, tmp_path / dep)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"deps": {"cmd": "echo ran", "deps": deps}}}))
    dvc = [str(Path(sys.executable).with_name("dvc"))]
    subprocess.run(dvc + ["init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    res = subprocess.run(dvc + ["repro"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ran" in res.stdout, res.stdout + res.stderr
    assert "is empty" not in res.stdout + res.stderr

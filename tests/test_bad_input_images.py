"""Hostile and unusual ImageFolders through the shard stage's CLI (issue 29): a decompression
bomb, a 16-bit PNG, directory links back into the tree, the same file twice, a full disk, a
second run at once. Refused: exit 2, one line, no traceback, no shard folder; legitimate
inputs (16-bit PNG, a linked file or folder from outside) sharded correctly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _folder(root: Path, n_per_class: int = 6, size: int = 12) -> Path:
    """``root/{cat,dog}/NN.png``: small greyscale images, distinct per file."""
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / c / f"{i:02d}.png")
    return root


def _shard(tmp_path: Path, root: Path, out: Path | None = None, **data) -> tuple[subprocess.CompletedProcess, Path]:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(source="imagefolder", root=str(root), image_size=8, pretrain_size=None, train_size=None, val_size=2,
                       test_fraction=0.3, shard_size=8, workers=2, **data)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    out = out or tmp_path / "shards"
    res = subprocess.run([sys.executable, str(REPO / "stages" / "shard.py"), "--params", str(params), "--out", str(out)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    return res, out


def _refused(res: subprocess.CompletedProcess, out: Path, message: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("\nerror: ") + res.stderr.startswith("error: ") == 1, res.stderr
    assert message in res.stderr, res.stderr
    assert not out.exists() and not out.with_name(out.name + ".tmp").exists()


def test_an_image_over_the_pixel_limit_is_refused_naming_it(tmp_path):
    """60 x 60 = 3,600 pixels against a limit of 1,000: over twice the limit, where PIL raised its
    DecompressionBombError from inside the worker pool (a traceback per process)."""
    root = _folder(tmp_path / "imgs")
    Image.new("L", (60, 60)).save(root / "dog" / "bomb.png")
    res, out = _shard(tmp_path, root, max_image_pixels=1000)
    _refused(res, out, f"error: image {root}/dog/bomb.png has 60x60 = 3,600 pixels, over data.max_image_pixels (1,000")


def test_legitimate_inputs_16_bit_png_and_links(tmp_path):
    """One folder with what must work: a 16-bit greyscale ramp comes out as the same ramp in 8
    bits (it was clipped: every value above 255 became white); ``ln -s .. dog/loop`` is not
    followed (it counted every image again through each level of the loop), with a warning
    naming it; a class folder and a file linked from outside the tree are read like the others."""
    root = _folder(tmp_path / "imgs")
    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1040).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(root / "dog" / "ramp16.png")
    assert Image.open(root / "dog" / "ramp16.png").mode == "I;16"
    (root / "dog" / "loop").symlink_to("..")
    elsewhere = _folder(tmp_path / "store", n_per_class=3)
    (root / "bird").symlink_to(elsewhere / "cat")
    (root / "dog" / "extra.png").symlink_to(elsewhere / "dog" / "00.png")

    res, out = _shard(tmp_path, root)
    assert res.returncode == 0, res.stderr
    assert f"warning: not following the directory link {root}/dog/loop -> ..: it leads back into the ImageFolder" in res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["bird", "cat", "dog"]
    assert sum(manifest["splits"][s]["count"] for s in ("train", "val", "test")) == 12 + 1 + 3 + 1  # each file once
    from pipeline.shards.read import load_split

    expected = (ramp.astype(np.int64) * 255 + 32767) // 65535  # round(v * 255 / 65535)
    found = [im for s in ("train", "val", "test") for im in load_split(out, s)[0] if np.array_equal(im[0].numpy(), expected)]
    assert len(found) == 1, "the 16-bit ramp is not in the shards scaled to 8 bits"


def test_the_same_file_in_train_and_test_is_refused(tmp_path):
    root = tmp_path / "imgs"
    _folder(root / "train"), _folder(root / "test", n_per_class=2)
    (root / "test" / "cat" / "leak.png").symlink_to(root / "train" / "cat" / "00.png")
    res, out = _shard(tmp_path, root)
    _refused(res, out, f"error: ImageFolder {root}: {root}/test/cat/leak.png and {root}/train/cat/00.png are the same file")


def test_a_full_disk_names_the_shard_folder(tmp_path):
    """The shard folder on a 4 KiB tmpfs (a mount namespace of its own): ENOSPC while a tar is
    written names the folder (the tar writer's error names no file)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                                                          capture_output=True).returncode != 0:
        pytest.skip("no unprivileged mount namespaces here (unshare)")
    root = _folder(tmp_path / "imgs")
    disk = tmp_path / "disk"
    disk.mkdir()
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(source="imagefolder", root=str(root), image_size=8, pretrain_size=None, train_size=None, val_size=2,
                       test_fraction=0.3, shard_size=8, workers=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    script = (f"mount -t tmpfs -o size=4k tmpfs {disk} && exec {sys.executable} {REPO}/stages/shard.py "
              f"--params {tmp_path}/params.yaml --out {disk}/shards")
    res = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr == f"error: cannot write {disk}/shards: No space left on device; free disk space and re-run\n"


def test_a_second_run_on_the_same_output_refuses_naming_the_first(tmp_path):
    """A run holds the shard folder's lock (here a process that took it the same way and waits);
    the stage started beside it refuses at once and names it."""
    root = _folder(tmp_path / "imgs")
    out = tmp_path / "shards"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pipeline.errors import output_lock\n"
                               f"with output_lock({str(out)!r}):\n    print('locked', flush=True)\n    time.sleep(60)"],
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        t0 = time.time()
        res, out = _shard(tmp_path, root, out=out)
        _refused(res, out, f"error: {out} is being written by another run of this stage (pid {holder.pid} on ")
        assert time.time() - t0 < 30
    finally:
        holder.kill()
        holder.wait()
    from pipeline.errors import output_lock

    with output_lock(out):  # the lock went with its process
        pass

"""benchmarks/gpu.py runs to the end at its smoke size on the CPU (issue 25, item 6), so the
GPU benchmark cannot rot: photos -> shard stage -> loader -> views -> SimCLR on a ResNet and
DINO on a ViT through the training loop, with its JSON written."""

import json
import math
import os
import subprocess
import sys

from tests.conftest import REPO


def test_gpu_benchmark_smoke_measures_the_pipeline(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--smoke", "--work", str(tmp_path / "work"),
                           "--json", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["environment"]["device"] == "cpu" and result["environment"]["precision"] == "fp32"
    rows = {(r["method"], r["arch"]): r for r in result["rows"]}
    assert set(rows) == {("simclr", "resnet18"), ("dino", "vit_small_patch16_224")}
    for r in rows.values():
        assert r["images_per_s"] > 0 and r["timed_seconds"] > 0 and 0 <= r["data_wait_share"] < 1
        assert r["peak_gpu_mib"] is None  # no GPU: no GPU number
        assert math.isfinite(r["loss"])
        assert r["crop_px"] == 64 and r["batch_per_process"] == 4
    assert rows[("simclr", "resnet18")]["optimizer"] == "lars"  # the preset's recipe reached the run
    assert rows[("dino", "vit_small_patch16_224")]["views"] == "2x64 + 2x32"  # multi-crop
    # the real views and SimCLR step: zero synchronising calls between optimizer steps
    assert rows[("simclr", "resnet18")]["syncs_per_step_max"] == 0
    # the data went through the real shard stage from an ImageFolder with train/ and val/, as JPEG
    manifest = json.loads((tmp_path / "work" / "shards" / "manifest.json").read_text())
    assert manifest["source"]["image_format"] == "jpeg" and manifest["source"]["store_size"] == 64
    assert manifest["source"]["store_aspect"] is True  # stored by the short side, as ImageNet JPEGs are
    assert (tmp_path / "work" / "photos" / "val").is_dir()
    assert "| simclr | resnet18 |" in proc.stdout


def test_gpu_benchmark_data_wait_is_the_time_blocked_on_the_loader():
    """The data-wait share's numerator: seconds spent inside the loader's ``next``, per batch."""
    import time

    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu import _waited

    def slow_loader():
        for i in range(3):
            time.sleep(0.02 if i == 1 else 0)
            yield i

    waits, asked = [], []
    assert list(_waited(slow_loader(), waits, asked.append)) == [0, 1, 2]
    assert len(waits) == 3 and waits[1] >= 0.02 > waits[0] and asked == [0, 1, 2, 3]


def test_gpu_benchmark_ranks_do_not_get_nproc():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu import _without_option

    argv = ["gpu.py", "--smoke", "--nproc", "2", "--work", "w", "--nproc=all"]
    assert _without_option(argv, "--nproc") == ["gpu.py", "--smoke", "--work", "w"]


def test_gpu_benchmark_device_cuda_without_a_gpu_stops_before_any_work(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--device", "cuda", "--work",
                           str(tmp_path / "work")], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: --device: cuda, but CUDA is not usable")
    assert not (tmp_path / "work").exists()  # no photos generated, no shards

"""A device that says what it is: ``pretrain.device`` and ``pretrain.precision``.

- ``device: cuda`` without a usable GPU: the pretrain stage exits 2 before any work with one
  line naming the reason and the fix, and writes nothing (the real stage, by subprocess);
- the reasons (CPU-only build, no driver, driver too old, no device visible), each with its fix;
- ``auto`` picks the CPU here and ``precision: auto`` is float32 on it (the CPU default);
- the device and precision go into provenance.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.errors import UserError
from pipeline.provenance import device_info
from pipeline.train.device import cuda_unavailable_reason, pick_device, resolve_precision

REPO = Path(__file__).resolve().parents[2]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable GPU")


@no_cuda
def test_cuda_requested_without_cuda_exits_2_with_one_line_and_writes_nothing(tiny_shards, tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["pretrain"]["device"] = "cuda"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    args = ["--params", "params.yaml", "--method", "simclr", "--shards", str(tiny_shards), "--out", "models/simclr",
            "--metrics", "metrics/simclr.json", "--timing", "metrics/simclr.timing.json", "--live", "dvclive/simclr"]
    res = subprocess.run([sys.executable, str(REPO / "stages" / "pretrain.py"), *args], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: pretrain.device: cuda, but CUDA is not usable: "), res.stderr
    assert "set pretrain.device: cpu" in lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["params.yaml"]  # nothing written


@pytest.mark.parametrize("build, driver, expected", [
    (None, None, "CPU-only build; install a CUDA build of torch"),
    ("13.0", None, "no NVIDIA driver found"),
    ("13.0", 12040, "driver is too old: it supports CUDA 12.4 and this torch is built for CUDA 13.0; upgrade the driver"),
    ("12.6", 12080, "no CUDA device is visible"),
])
def test_each_reason_names_its_fix(build, driver, expected):
    reason = cuda_unavailable_reason(build, driver, key="pretrain.device")
    assert expected in reason and reason.endswith("set pretrain.device: cpu") and "\n" not in reason


@no_cuda
def test_auto_is_the_cpu_in_float32_here_and_recorded():
    device = pick_device("auto")
    assert device.type == "cpu" and pick_device("cpu").type == "cpu"
    assert resolve_precision("auto", device) == "fp32"  # the CPU default trains as before
    assert resolve_precision("bf16", device) == "bf16"  # CPU autocast, asked for explicitly
    with pytest.raises(UserError, match="pretrain.device: cuda, but CUDA is not usable"):
        pick_device("cuda")
    info = device_info(device, "fp32")
    assert info["device"] == "cpu" and info["precision"] == "fp32" and info["torch_cuda"] == torch.version.cuda

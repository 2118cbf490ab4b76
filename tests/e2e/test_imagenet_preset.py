"""`presets/imagenet.yaml` scaled down through the real `dvc repro`: a generated ImageFolder with
ImageNet's train/ + val/ layout, the preset merged as users do (`python -m pipeline.presets
imagenet`), only sizes and lengths shrunk, SimCLR on torchvision's ResNet-50 and DINO on timm's
ViT-S/16 as the preset sets them; the exports load strictly into the library models."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from tests.e2e.test_dvc_repro import REPO, _ran, _run

pytestmark = pytest.mark.e2e

CLASSES = ("disc", "bar", "ring")  # one drawn shape per class, on a noisy coloured background
TRAIN_PER_CLASS, VAL_PER_CLASS = 8, 3

# Only what must shrink for a 2-core CPU; every other value is the preset's (the recipes, the optimizers,
# the per-view blur and solarize, the architectures). Per-method `pretrain` sections override the shared one.
SHRINK = {
    "protocols": ["knn"],
    "baselines": ["raw_pixels"],
    "methods": ["simclr", "dino"],
    "data": {"store_size": 32, "image_size": 32, "val_size": 3, "pretrain_size": 8, "shard_size": 16},
    "pretrain": {"knn_every": 1, "knn_bank_size": 16, "knn_query_size": 10, "prepare_images": 8, "shuffle_buffer": 8},
    "simclr": {"hidden_dim": 64, "pretrain": {"epochs": 1, "batch_size": 4}},
    # 16 px local crops: one ViT-S/16 patch each (the preset's 96 px at 224)
    "dino": {"out_dim": 64, "num_local_crops": 2, "local_crop_size": 16, "pretrain": {"epochs": 1, "batch_size": 4}},
    "knn": {"ks": [3]},
}


def _photo(rng: np.random.Generator, cls: int, width: int, height: int) -> Image.Image:
    """A small RGB photo stand-in: a noisy background and the class's shape at a random place."""
    img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8) // 2 + 64)
    draw, colour = ImageDraw.Draw(img), tuple(int(c) for c in rng.integers(150, 256, 3))
    x, y, r = int(rng.integers(12, width - 12)), int(rng.integers(12, height - 12)), int(rng.integers(6, 11))
    if CLASSES[cls] == "disc":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    elif CLASSES[cls] == "bar":
        draw.rectangle((x - r, y - 3, x + r, y + 3), fill=colour)
    else:
        draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=3)
    return img


def _image_folder(root: Path) -> None:
    """ImageNet's layout: root/{train,val}/<class>/*.JPEG, landscape and portrait photos."""
    rng = np.random.default_rng(0)
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                w, h = (48, 40) if i % 2 else (40, 52)  # not square: stored by the short side
                _photo(rng, c, w, h).save(root / split / name / f"{name}_{i:03d}.JPEG", quality=90)


def _merge(params_path: Path, updates: dict) -> None:
    """Mappings merged key by key (one level down for per-method `pretrain`), lists and scalars replaced."""
    params = yaml.safe_load(params_path.read_text())
    for key, value in updates.items():
        if isinstance(value, dict):
            section = params.setdefault(key, {})
            for k, v in value.items():
                section[k] = {**section.get(k, {}), **v} if isinstance(v, dict) else v
        else:
            params[key] = value
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def imagenet_copy(tmp_path_factory) -> Path:
    """The repository copied (no results), the generated ImageFolder, the preset merged, then shrunk."""
    dst = tmp_path_factory.mktemp("imagenet_repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        if f.startswith(("metrics/", "reports/", "dvclive/", "text/")) or f == "dvc.lock" or not (REPO / f).is_file():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dst / f)
    data = tmp_path_factory.mktemp("imagenet_data")
    _image_folder(data)
    _run(["python", "-m", "pipeline.presets", "imagenet"], dst)
    _merge(dst / "params.yaml", SHRINK | {"data": SHRINK["data"] | {"root": str(data)}})
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "imagenet"]):
        _run(cmd, dst)
    return dst


def test_the_imagenet_preset_runs_scaled_down_through_dvc_repro(imagenet_copy):
    repo = imagenet_copy
    params = yaml.safe_load((repo / "params.yaml").read_text())
    # the preset's recipes survived the shrink: what the test claims to run is what ran
    assert params["encoder"]["arch"] == "resnet50" and params["dino"]["encoder"]["arch"] == "vit_small_patch16_224"
    assert params["simclr"]["pretrain"]["optimizer"] == "lars" and params["dino"]["pretrain"]["optimizer"] == "adamw"
    assert params["augment"]["blur_p"] == [1.0, 0.1] and params["data"]["source"] == "imagefolder"

    out = _run(["dvc", "repro", "report"], repo)  # the image pipeline (the text-* stages are another preset's)
    assert _ran(out) == {"shard", "pretrain@simclr", "pretrain@dino", "evaluate@simclr-knn", "evaluate@dino-knn",
                         "baseline@raw_pixels-knn", "report"}, out[-3000:]

    manifest = json.loads((repo / "data" / "shards" / "manifest.json").read_text())
    counts = {k: v["count"] for k, v in manifest["splits"].items() if isinstance(v, dict) and "count" in v}
    n_train = len(CLASSES) * TRAIN_PER_CLASS
    assert counts["test"] == len(CLASSES) * VAL_PER_CLASS  # ImageNet's val/ is the test split
    assert counts["val"] == 3 and counts["train"] == n_train - 3
    assert manifest["image_size"] == 32 and manifest["channels"] == 3

    for method in ("simclr", "dino"):
        pre = json.loads((repo / "metrics" / "pretrain" / f"{method}.json").read_text())
        assert pre["epochs"] == 1 and np.isfinite(pre["loss"]), pre
        knn = json.loads((repo / "metrics" / "knn" / f"{method}.json").read_text())
        assert set(knn) == {"knn3_top1"} and 0 <= knn["knn3_top1"] <= 1
    assert "| simclr |" in (repo / "reports" / "report.md").read_text()

    # the ResNet-50 that SimCLR trained, exported, is torchvision's own model (features: fc = Identity)
    _run(["python", "-m", "pipeline.cli", "export", "models/simclr/encoder.pt", "--out", "export/simclr"], repo)
    from safetensors.torch import load_file
    from torchvision.models import resnet50

    from pipeline.modalities.encoders import load_encoder

    net = resnet50()
    net.fc = torch.nn.Identity()
    net.load_state_dict(load_file(repo / "export" / "simclr" / "model.safetensors"), strict=True)
    card = json.loads((repo / "export" / "simclr" / "model_card.json").read_text())
    assert card["arch"] == "resnet50" and set(card["metrics"]) == {"knn", "pretrain"}
    assert card["data"]["manifest_sha256"]
    encoder = load_encoder(repo / "models" / "simclr" / "encoder.pt").eval()
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(card["input"]["mean"]).view(1, 3, 1, 1), torch.tensor(card["input"]["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()((x - mean) / std), encoder(x), rtol=1e-4, atol=1e-5)

"""Models that leave the pipeline: ``ssl export`` writes the backbone as the library model's
safetensors (strict load, same features), ``ssl embed`` featurises a folder, ``ssl info`` lists."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import EncoderParams
from pipeline.errors import UserError
from pipeline.export import export_encoder, featurise_folder
from pipeline.modalities.encoders import load_encoder, save_encoder
from pipeline.models.encoder import Encoder

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ["resnet50", "vit_small_patch16_224"]  # the two targets
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _ssl(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The real command (``python -m pipeline.cli`` is what the ``ssl`` entry point runs)."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=ENV, capture_output=True, text=True)


def _ssl_here(monkeypatch, *args: str) -> None:
    """The entry point's function in this process (each interpreter start costs ~2 s of CPU: the process
    boundary is tested by export and its error case)."""
    from pipeline.cli import main

    monkeypatch.setattr(sys, "argv", ["ssl", *args])
    main()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """Per arch: a trained-looking encoder (random weights, BatchNorm statistics moved off their
    defaults) saved as the pretrain stage does, then exported by the CLI with a manifest and metrics."""
    root = tmp_path_factory.mktemp("export")
    (root / "shards").mkdir()
    (root / "shards" / "manifest.json").write_text(json.dumps({"source": "imagefolder", "splits": {"pretrain": {"count": 7}}}))
    (root / "metrics" / "linear_eval").mkdir(parents=True)
    out = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        enc = Encoder(EncoderParams(arch=arch), 1, [0.3], [0.35], 32)
        enc.train()
        with torch.no_grad():
            enc(torch.rand(4, 1, 32, 32))  # running statistics of a ResNet's BatchNorms move
        method = f"m_{arch}"
        (root / "models" / method).mkdir(parents=True)
        save_encoder(enc.eval(), root / "models" / method / "encoder.pt")
        out[arch] = root / "out" / arch
        if arch == "resnet50":  # the command, as a user runs it, for a method params.yaml knows
            (root / "metrics" / "linear_eval" / "simclr.json").write_text(json.dumps({"linear_top1": 0.5}))
            res = _ssl("export", str(root / "models" / method / "encoder.pt"), "--out", str(out[arch]), "--method", "simclr",
                       "--shards", str(root / "shards"), "--metrics", str(root / "metrics"), "--params", str(ROOT / "params.yaml"))
            assert res.returncode == 0, res.stderr
        else:  # the Python API it calls (one subprocess fewer)
            export_encoder(enc, out[arch], {"method": method})
    out["root"] = root
    return out


def test_model_card_holds_data_hash_params_metrics_and_input_contract(exported):
    from safetensors import safe_open

    with safe_open(exported["resnet50"] / "model.safetensors", "pt") as f:
        assert f.metadata()["arch"] == "resnet50" and "fc.weight" not in f.keys() and "conv1.weight" in f.keys()
    card = json.loads((exported["resnet50"] / "model_card.json").read_text())
    manifest = exported["root"] / "shards" / "manifest.json"
    assert card["data"]["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert card["data"]["counts"] == {"pretrain": 7}
    assert card["metrics"] == {"linear_eval": {"linear_top1": 0.5}}
    assert card["arch"] == "resnet50" and card["method"] == "simclr"
    assert card["weights_sha256"] == hashlib.sha256((exported["resnet50"] / "model.safetensors").read_bytes()).hexdigest()
    assert card["input"]["value_range"] == [0.0, 1.0] and card["input"]["image_size"] == 32
    assert card["input"]["grey_repeated_to_rgb"] and card["input"]["mean"] == pytest.approx([0.3] * 3)
    # the method's resolved recipe from params.yaml
    assert card["params"]["method"]["temperature"] == 0.2 and card["params"]["pretrain"]["lr"] == 1.2
    assert not list(exported["resnet50"].glob("*.tmp"))


def test_export_loads_strictly_in_a_clean_interpreter_and_gives_the_encoders_features(exported, tmp_path):
    # -I: no PYTHONPATH, no current directory on sys.path: only torch, torchvision, timm, safetensors and
    # the card (json), as a user outside the pipeline has; grey [0, 1] input made per the card's contract
    x = torch.rand(2, 1, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    script = f"""
import json, sys, torch
from safetensors.torch import load_file
import torchvision, timm
out = {{}}
for arch, folder in {({a: str(exported[a]) for a in ARCHS})!r}.items():
    if arch == "resnet50":
        m = torchvision.models.resnet50(); m.fc = torch.nn.Identity()
    else:
        m = timm.create_model(arch, num_classes=0, dynamic_img_size=True)
    m.load_state_dict(load_file(folder + "/model.safetensors"), strict=True)
    card = json.load(open(folder + "/model_card.json"))["input"]
    x = torch.load({str(tmp_path / 'x.pt')!r}).expand(-1, card["channels"], -1, -1)  # grey repeated
    mean, std = torch.tensor(card["mean"]).view(1, -1, 1, 1), torch.tensor(card["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        out[arch] = m.eval()((x - mean) / std)
torch.save(out, {str(tmp_path / 'out.pt')!r})
assert not any(m == "pipeline" or m.startswith("pipeline.") for m in sys.modules), "the package was imported"
"""
    res = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    got = torch.load(tmp_path / "out.pt")
    for arch in ARCHS:
        with torch.no_grad():
            want = load_encoder(exported["root"] / "models" / f"m_{arch}" / "encoder.pt")(x)
        torch.testing.assert_close(got[arch], want, rtol=0, atol=0)  # the same weights, the same computation


def test_export_of_this_packages_own_model_is_a_clear_error(tmp_path):
    save_encoder(Encoder(EncoderParams(layers=[1], width=8), 1, [0.3], [0.35], 28), tmp_path / "encoder.pt")
    res = _ssl("export", str(tmp_path / "encoder.pt"), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: encoder.arch 'resnet' is this package's own model") and "resnet50" in res.stderr
    assert not (tmp_path / "out").exists()


def test_embed_writes_the_encoders_features_of_a_folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for i, size in enumerate([(40, 32), (32, 50), (64, 64)]):  # any size and aspect: short side, centre crop
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(tmp_path / "imgs" / ("sub" if i else "") / f"{i}.png")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    encoder = tmp_path / "encoder.pt"
    save_encoder(Encoder(EncoderParams(layers=[1], width=8), 1, [0.3], [0.35], 32).eval(), encoder)
    _ssl_here(monkeypatch, "embed", str(tmp_path / "imgs"), "--encoder", str(encoder), "--out", str(tmp_path / "f.npz"),
              "--device", "cpu")
    out = np.load(tmp_path / "f.npz")
    assert list(out["paths"]) == ["0.png", "sub/1.png", "sub/2.png"] and out["features"].shape == (3, 8)
    feats, paths = featurise_folder(load_encoder(encoder), tmp_path / "imgs", batch_size=2)
    np.testing.assert_allclose(out["features"], feats, rtol=1e-5, atol=1e-5)
    # the 32 x 50 px image: grey (the encoder's shards were grey), its short side already 32, the centre 32 rows
    img = Image.open(tmp_path / "imgs" / "sub" / "1.png").convert("L").crop((0, 9, 32, 41))
    x = torch.from_numpy(np.array(img)).float().div(255).view(1, 1, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(feats[1], load_encoder(encoder)(x)[0].numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="holds no images"):  # the CLI's exit 2: test_export_of_this_packages_own_model...
        featurise_folder(load_encoder(encoder), _empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    return tmp_path / "empty"


def test_info_lists_methods_protocols_presets_and_the_entry_point_is_installed(monkeypatch, capsys):
    _ssl_here(monkeypatch, "info")
    out = capsys.readouterr().out
    assert "simclr" in out and "dino" in out and "linear_eval" in out and "imagenet" in out and "resnet50" in out
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, func = scripts["ssl"].split(":")
    from importlib import import_module

    assert callable(getattr(import_module(module), func))

"""Checkpoints load with weights_only=True: a crafted file runs nothing, a foreign or
truncated one is refused with a message, and every method's state round-trips."""

from __future__ import annotations


import pytest
import torch

from pipeline.errors import UserError
from pipeline.train import checkpoint as ckpt


class _Payload:
    """Unpickling this runs a command: what a malicious checkpoint.pt would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_crafted_checkpoint_runs_nothing_and_is_refused(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "checkpoint.pt"
    torch.save({"fingerprint": "x", "module": _Payload(marker)}, path)
    with pytest.raises(UserError, match=r"is not a checkpoint this pipeline can resume \(unreadable: .*rm .*checkpoint.pt"):
        ckpt.load_resumable(path, "x")
    assert not marker.exists()


def test_a_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ckpt.save(path, {"fingerprint": "x", "finished": False, "module": {"w": torch.ones(1000)}})
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError, match="not a checkpoint this pipeline can resume"):
        ckpt.load_resumable(path, "x")


def test_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(UserError, match="a list without a run fingerprint"):
        ckpt.load_resumable(path, "x")


def test_resume_needs_the_same_fingerprint_and_an_unfinished_run(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ckpt.save(path, {"fingerprint": "a", "finished": False, "epoch": 0})
    assert ckpt.load_resumable(path, "a")["epoch"] == 0
    assert ckpt.load_resumable(path, "b") is None
    ckpt.save(path, {"fingerprint": "a", "finished": True, "epoch": 1})
    assert ckpt.load_resumable(path, "a") is None


def test_the_fingerprint_covers_the_code(tmp_path, monkeypatch):
    from pipeline import provenance

    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "loss.py").write_text("x = 1\n")
    monkeypatch.setattr(provenance, "PACKAGE_ROOT", tmp_path / "pipeline")
    before = provenance.code_fingerprint()
    (tmp_path / "pipeline" / "loss.py").write_text("x = 1  # only a comment\n")
    assert provenance.code_fingerprint() != before


def _image_methods() -> list[str]:
    from pipeline.registry import METHODS

    return [n for n in METHODS.names() if METHODS.get(n).modality == "image"]  # text methods: tests/methods/test_text_methods.py


@pytest.mark.parametrize("name", _image_methods())
def test_every_methods_training_state_loads_weights_only(name, default_params_dict, fmnist_small, tmp_path):
    """Model, optimizer (after a step: momentum buffers), extra state (queues, RNGs) and
    history of every method survive ``torch.load(weights_only=True)``."""
    from pipeline.config import parse_params
    from pipeline.registry import METHODS
    from pipeline.modalities.encoders import build_encoder
    from pipeline.train.optim import build_optimizer, param_groups

    params = parse_params(default_params_dict)
    torch.manual_seed(0)
    encoder = build_encoder(params.encoder_for(name), {"channels": 1, "image_size": 28, "mean": [0.3], "std": [0.35]})
    method = METHODS.get(name)(encoder, params.method_params[name], params.augment, 0, torch.device("cpu"))
    images = torch.from_numpy(fmnist_small[0].images[:32].copy()).permute(0, 3, 1, 2).contiguous()
    method.prepare(images)
    opt = build_optimizer(param_groups(method, params=method.optimized_parameters()), params.pretrain_for(name), 1)
    method.train()(images)["loss"].backward()
    opt.step()
    method.after_optimizer_step(0.1)
    state = {"module": method.state_dict(), "optimizer": opt.state_dict(),
             "ranks": [{"extra": method.extra_state(), "torch_rng": torch.get_rng_state()}], "world_size": 1, "epoch": 0, "history": [{"loss": 1.0, "epoch": 1}],
             "fingerprint": "f", "finished": False}
    ckpt.save(tmp_path / "c.pt", state)
    back = ckpt.load_resumable(tmp_path / "c.pt", "f")
    assert back is not None and back["module"].keys() == method.state_dict().keys()
    method.load_extra_state(back["ranks"][0]["extra"])

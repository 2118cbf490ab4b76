import torch
from torch import nn

from pipeline.config import OptimParams
from pipeline.train.loop import TrainJob, fit
from pipeline.train.optim import param_groups
from pipeline.train.schedule import warmup_cosine


def test_warmup_cosine():
    s = warmup_cosine(100, 10)
    assert len(s) == 100 and abs(s[0] - 0.1) < 1e-9 and s[9] == 1.0
    assert all(a >= b for a, b in zip(s[10:], s[11:])) and s[-1] < 0.01


class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x, y):
        return {"loss": ((self.lin(x).squeeze(1) - y) ** 2).mean()}


def _data(epoch):
    g = torch.Generator().manual_seed(epoch)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]


def _job(tmp_path, epochs, fingerprint="a"):
    torch.manual_seed(0)
    model = Regression()
    return TrainJob(module=model, param_groups=param_groups(model), batches=_data, steps_per_epoch=4,
                    optim=OptimParams(epochs=epochs, batch_size=16, lr=1.0, warmup_epochs=1),
                    checkpoint_path=tmp_path / "ckpt.pt", fingerprint=fingerprint)


def test_loss_decreases(tmp_path):
    hist = fit(_job(tmp_path, 8), torch.device("cpu"))
    assert hist[-1]["loss"] < 0.1 * hist[0]["loss"]


def test_resume_is_exact(tmp_path):
    straight = _job(tmp_path / "a", 4)
    (tmp_path / "a").mkdir()
    fit(straight, torch.device("cpu"))
    (tmp_path / "b").mkdir()
    # simulate a kill after epoch 2: run a job whose loop stops early, keeping its checkpoint
    killed = _job(tmp_path / "b", 4)
    killed.batches = lambda e: (_ for _ in ()).throw(KeyboardInterrupt) if e == 2 else _data(e)
    try:
        fit(killed, torch.device("cpu"))
    except KeyboardInterrupt:
        pass
    resumed = _job(tmp_path / "b", 4)
    hist = fit(resumed, torch.device("cpu"))
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    for p, q in zip(straight.module.parameters(), resumed.module.parameters()):
        assert torch.equal(p, q)


def test_checkpoint_of_other_params_is_ignored(tmp_path):
    fit(_job(tmp_path, 2, fingerprint="a"), torch.device("cpu"))
    hist = fit(_job(tmp_path, 2, fingerprint="b"), torch.device("cpu"))
    assert [h["epoch"] for h in hist] == [1, 2]  # trained from scratch, not resumed


def test_divergence_is_a_clear_error_without_checkpoint(tmp_path):
    import pytest

    from pipeline.errors import UserError

    class Diverges(Regression):
        def forward(self, x, y):
            return {"loss": super().forward(x, y)["loss"] * float("inf")}

    job = _job(tmp_path, 2)
    job.module = Diverges()
    job.param_groups = param_groups(job.module)
    with pytest.raises(UserError, match="lower the learning rate"):
        fit(job, torch.device("cpu"))
    assert not (tmp_path / "ckpt.pt").exists()

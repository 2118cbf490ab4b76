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


def _diverging_job(tmp_path, forward, epochs=3):
    """A job whose module computes ``forward(self, x, y)`` with a checkpoint every epoch."""

    class Model(Regression):
        def forward(self, x, y):
            return forward(self, x, y)

    job = _job(tmp_path, epochs)
    job.module = Model()
    job.param_groups = param_groups(job.module)
    job.optim = job.optim.model_copy(update={"lr": 0.01, "warmup_epochs": 0})
    return job


def _checkpoint_epochs(path):
    state = torch.load(path, weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["module"].values())
    return state["epoch"] + 1, state["finished"]


def test_non_finite_loss_in_a_later_epoch_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    import pytest

    from pipeline.train.loop import Diverged

    calls = {"n": 0}

    def forward(self, x, y):
        calls["n"] += 1
        loss = ((self.lin(x).squeeze(1) - y) ** 2).mean()
        return {"loss": loss * float("inf") if calls["n"] == 6 else loss}  # step 6: epoch 2, its 2nd step

    with pytest.raises(Diverged, match="non-finite at step 6; lower the learning rate"):
        fit(_diverging_job(tmp_path, forward), torch.device("cpu"))
    assert _checkpoint_epochs(tmp_path / "ckpt.pt") == (1, False)  # epoch 1's, never the diverged state


def test_overflowing_weights_with_a_finite_loss_are_caught(tmp_path):
    """lr 1e30 drives a weight to ~1e28 while the (clamped) loss stays finite: the
    parameter check, not the loss, stops it before any checkpoint."""
    import pytest

    from pipeline.train.loop import Diverged

    def forward(self, x, y):
        return {"loss": (-self.lin.weight.sum()).clamp(min=-1e3)}

    job = _diverging_job(tmp_path, forward)
    job.optim = job.optim.model_copy(update={"lr": 1e30, "momentum": 0.0})
    with pytest.raises(Diverged, match=r"lin.weight.*non-finite or overflowing"):
        fit(job, torch.device("cpu"))
    assert not (tmp_path / "ckpt.pt").exists()


def test_non_finite_batchnorm_statistics_are_caught(tmp_path):
    import pytest

    from pipeline.train.loop import Diverged

    class WithStats(Regression):
        def __init__(self):
            super().__init__()
            self.register_buffer("running_var", torch.ones(1))

        def forward(self, x, y):
            self.running_var.mul_(1e30)  # what a blown-up activation does to BatchNorm's variance
            return super().forward(x, y)

    job = _job(tmp_path, 2)
    job.module = WithStats()
    job.param_groups = param_groups(job.module)
    with pytest.raises(Diverged, match="running_var"):
        fit(job, torch.device("cpu"))
    assert not (tmp_path / "ckpt.pt").exists()


def test_a_finished_checkpoint_is_never_resumed(tmp_path):
    fit(_job(tmp_path, 2), torch.device("cpu"))
    assert _checkpoint_epochs(tmp_path / "ckpt.pt") == (2, True)
    again = _job(tmp_path, 2)  # same fingerprint: e.g. `dvc repro -f`
    epochs_run = []
    again.batches = lambda e: epochs_run.append(e) or _data(e)
    hist = fit(again, torch.device("cpu"))
    assert epochs_run == [0, 1] and [h["epoch"] for h in hist] == [1, 2]  # trained again from scratch


def test_batch_larger_than_the_data_names_the_key(tmp_path):
    import pytest

    from pipeline.errors import UserError

    job = _job(tmp_path, 1)
    job.steps_per_epoch, job.batch_size_key = 0, "finetune.batch_size"
    with pytest.raises(UserError, match="finetune.batch_size=16 is larger than"):
        fit(job, torch.device("cpu"))


class NoisyRegression(Regression):
    """Draws from torch's global RNG every step, so an exact resume needs that RNG restored."""

    def forward(self, x, y):
        return {"loss": ((self.lin(x + 0.1 * torch.randn_like(x)).squeeze(1) - y) ** 2).mean()}


def _noisy_job(folder, epochs=3, every=3):
    job = _job(folder, epochs)
    torch.manual_seed(0)
    job.module = NoisyRegression()
    job.param_groups = param_groups(job.module)
    job.checkpoint_every_steps = every
    return job


def test_resume_within_an_epoch_is_exact(tmp_path):
    """4 steps an epoch, a checkpoint every 3 optimizer steps (3, 6, 9) besides epoch ends:
    killed in epoch 2 after its 3rd step (step 7), the run resumes from step 6 (epoch 2,
    2 steps in), and ends with the weights, epoch losses and RNG of an uninterrupted run."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = _noisy_job(tmp_path / "a")
    want = fit(straight, torch.device("cpu"))
    rng_after = torch.get_rng_state()

    def killed_batches(epoch):
        for i, batch in enumerate(_data(epoch)):
            if epoch == 1 and i == 3:
                raise KeyboardInterrupt  # after 3 steps of epoch 2, between checkpoints
            yield batch

    killed = _noisy_job(tmp_path / "b")
    killed.batches = killed_batches
    with __import__("pytest").raises(KeyboardInterrupt):
        fit(killed, torch.device("cpu"))
    state = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)
    assert (state["epoch"], state["steps_in_epoch"], state["finished"]) == (0, 2, False)
    resumed = _noisy_job(tmp_path / "b")
    got = fit(resumed, torch.device("cpu"))
    assert [h["loss"] for h in got] == [h["loss"] for h in want]
    for p, q in zip(straight.module.parameters(), resumed.module.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(torch.get_rng_state(), rng_after)

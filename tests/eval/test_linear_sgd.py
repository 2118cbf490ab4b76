"""SGD linear protocol on augmented images through the shared loop, on tiny real images."""

import pytest
import torch

from pipeline.config import EncoderParams
from pipeline.data.labelled import in_memory, in_memory_batches
from pipeline.eval.algorithms.linear_sgd import FrozenLinear, linear_sgd
from pipeline.models.encoder import Encoder

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def as_tensors(data, n):
    return torch.from_numpy(data.images[:n].copy()).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(data.labels[:n].copy()).long()


def random_encoder(seed=0):
    torch.manual_seed(seed)
    return Encoder(EncoderParams(width=8, layers=[1, 1]), 1, [0.286], [0.353])


@pytest.fixture(scope="module")
def small(fmnist_small):
    train, test = fmnist_small
    return as_tensors(train, 400), as_tensors(test, 200)


def test_frozen_random_encoder_beats_chance_and_stays_unchanged(small):
    train, test = small
    enc = random_encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    res = linear_sgd(enc, in_memory(*train), [test], 10, epochs=4, batch_size=50, lr=2.0, seed=0, device=CPU, crop_scale=(0.5, 1.0))
    assert res["top1"] > 0.3  # chance 0.10 on 10 Fashion-MNIST classes
    assert res["top1"] <= res["top5"] <= 1.0
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running stats
    assert all(p.requires_grad for p in enc.parameters()) and enc.training  # flags and mode restored


def test_deterministic_for_a_seed(small):
    train, test = small
    train = (train[0][:200], train[1][:200])
    run = lambda seed: linear_sgd(random_encoder(), in_memory(*train), [test], 10, epochs=2, batch_size=50, lr=1.0,  # noqa: E731
                                  seed=seed, device=CPU)
    a, b, c = run(3), run(3), run(4)
    assert a == b
    assert a["train_loss_last_epoch"] != c["train_loss_last_epoch"]


def test_only_the_head_is_trained_and_views_are_augmented(small):
    (x, y), _ = small
    model = FrozenLinear(random_encoder(), 10, seed=0, crop_scale=(0.08, 1.0))
    model.train()
    assert not model.encoder.training and model.head.training  # fit's train() keeps the encoder in eval
    out1 = model(x[:16], y[:16])
    out2 = model(x[:16], y[:16])
    assert out1["loss"] != out2["loss"]  # a fresh crop/flip every call
    out1["loss"].backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.head.parameters())


def test_in_memory_batches_reshuffle_each_epoch():
    x = torch.arange(10).view(10, 1, 1, 1).to(torch.uint8)
    y = torch.arange(10)
    batches = in_memory_batches(x, y, 4, seed=0)
    e0 = [b[1].tolist() for b in batches(0)]
    assert len(e0) == 2 and all(len(b) == 4 for b in e0)  # the partial batch is dropped
    assert e0 == [b[1].tolist() for b in batches(0)]  # seeded
    assert e0 != [b[1].tolist() for b in batches(1)]
    for xb, yb in batches(2):
        assert torch.equal(xb.flatten().long(), yb)  # images stay paired with labels

"""Class-balanced label subsets (the label-efficiency protocol itself: tests/eval/test_registry_protocols.py)."""

import numpy as np
import pytest
import torch

from pipeline.config import EncoderParams
from pipeline.data.labelled import in_memory
from pipeline.eval.algorithms.finetune import FinetuneParams, train_classifier
from pipeline.eval.algorithms.label_fractions import balanced_subset, per_class_count, rounded_count, smallest_fraction
from pipeline.modalities.text.encoder import TextEncoder
from pipeline.models.encoder import Encoder

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def imbalanced_labels(seed=0):
    counts = [100, 37, 10, 3, 250]  # class 3 has 3 images: 1% of it rounds to 0 -> 1
    y = np.repeat(np.arange(5), counts)
    return np.random.default_rng(seed).permutation(y), counts


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.5, 1.0])
def test_balanced_subset_per_class_counts(fraction):
    y, counts = imbalanced_labels()
    idx = balanced_subset(y, fraction, seed=0)
    expected = [max(1, int(np.floor(fraction * c + 0.5))) for c in counts]
    assert np.bincount(y[idx], minlength=5).tolist() == expected
    assert len(np.unique(idx)) == len(idx) and idx.min() >= 0 and idx.max() < len(y)  # distinct valid indices
    assert np.all(np.diff(idx) > 0)  # sorted


def test_per_class_count_rounding():
    assert per_class_count(0.01, 50) == 1  # 0.5 rounds up
    assert per_class_count(0.01, 149) == 1 and per_class_count(0.01, 150) == 2
    assert per_class_count(0.001, 10) == 1  # at least one per class
    assert per_class_count(1.0, 7) == 7


def test_balanced_subset_is_seeded_and_nested():
    y, _ = imbalanced_labels()
    a = balanced_subset(y, 0.1, seed=3)
    assert np.array_equal(a, balanced_subset(y, 0.1, seed=3))
    assert not np.array_equal(a, balanced_subset(y, 0.1, seed=4))
    small, mid, full = (set(balanced_subset(y, f, seed=3)) for f in (0.01, 0.1, 1.0))
    assert small <= mid <= full and full == set(range(len(y)))
    with pytest.raises(ValueError):
        balanced_subset(y, 0.0, seed=0)
    assert np.array_equal(balanced_subset(torch.from_numpy(y), 0.1, seed=3), a)  # tensors accepted


def test_train_classifier_on_in_memory_tensors_is_deterministic():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (40, 1, 16, 16), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 3, 40))
    cfg = FinetuneParams(epochs=1, batch_size=64, lr=0.1)  # batch capped at the 40 images

    def run():
        torch.manual_seed(1)
        enc = Encoder(EncoderParams(width=4, layers=[1]), 1, [0.5], [0.3])
        model, _ = train_classifier(enc, in_memory(images, labels), 3, cfg, 0.1, seed=0, device=CPU, desc="t")
        return model.head.weight.detach().clone()

    assert torch.equal(run(), run())


@pytest.mark.parametrize("length_group", [1, 50])
def test_train_classifier_batches_text_by_length(length_group):
    """Packed text trains in batches of similar lengths (``finetune.length_group``): with one
    window per epoch the batches hold disjoint length ranges; with 1 they are random."""
    gen = torch.Generator().manual_seed(0)
    n, width = 96, 24
    lengths = torch.randint(3, width + 1, (n,), generator=gen)
    att = (torch.arange(width) < lengths[:, None]).long()
    ids = torch.randint(8, 50, (n, width), generator=gen) * att
    x, labels = torch.stack([ids, att], 1), torch.randint(0, 3, (n,), generator=gen)
    torch.manual_seed(1)
    enc = TextEncoder(EncoderParams(arch="transformer", dim=16, depth=1, heads=2), vocab_size=50, max_length=width)
    seen = []
    enc.register_forward_pre_hook(lambda _, args: seen.append(args[0][:, 1].sum(1)) if enc.training else None)
    cfg = FinetuneParams(epochs=1, batch_size=16, lr=0.01, optimizer="adamw", length_group=length_group)
    train_classifier(enc, in_memory(x, labels, cfg.length_group, lengths), 3, cfg, 1.0, seed=0, device=CPU, desc="t")
    assert len(seen) == n // 16
    spans = sorted((int(s.min()), int(s.max())) for s in seen)
    disjoint = all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))
    assert disjoint == (length_group > 1)


@pytest.mark.parametrize("count", [1, 2, 3, 17, 24, 470, 500, 999, 1000, 12345])
def test_smallest_fraction_keeps_one_image(count):
    f = smallest_fraction(count)
    assert f * count + 0.5 >= 1 and (f * 0.95) * count + 0.5 < 1.05  # keeps 1 image, and is about the least that does
    assert rounded_count(f, count) >= 1 and per_class_count(f, count) == rounded_count(f, count)  # the sampler's rounding

"""Length-grouped batches (``length_grouped``, ``in_memory_batches(lengths=...)``): every
position once, windows sorted by length, the batch order seeded and shuffled."""

from __future__ import annotations

import pytest
import torch

from pipeline.modalities.text.length_groups import length_grouped
from pipeline.data.labelled import in_memory_batches


def padded(batches: list[torch.Tensor], lengths: torch.Tensor) -> int:
    """Positions a forward pass computes: each batch cut to its longest entry."""
    return sum(len(b) * int(lengths[b].max()) for b in batches)


def test_every_position_once_and_windows_sorted():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 65, (240,), generator=gen)
    batches = length_grouped(lengths, 8, 5, torch.Generator().manual_seed(1))
    assert batches.shape == (30, 8)
    assert torch.equal(batches.flatten().sort().values, torch.arange(240))
    for w in range(6):  # each window of 5 batches holds its own 40 positions, sorted by length
        in_window = batches[(batches // 40 == w).all(1)]
        assert len(in_window) == 5
        key = lengths[in_window[:, 0]] * 1000 + lengths[in_window[:, -1]]  # (shortest, longest) of each batch
        ordered = in_window[key.argsort()]  # the window's batches back in sorted order
        assert torch.all(lengths[ordered.flatten()].diff() >= 0)
    assert padded(list(batches), lengths) < 0.8 * padded(list(torch.arange(240).view(30, 8)), lengths)


def test_batch_order_is_seeded_and_shuffled():
    lengths = torch.arange(64)
    a = length_grouped(lengths, 4, 16, torch.Generator().manual_seed(1))
    b = length_grouped(lengths, 4, 16, torch.Generator().manual_seed(1))
    c = length_grouped(lengths, 4, 16, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, torch.arange(64).view(16, 4))  # not from short to long


def test_refuses_a_partial_batch():
    with pytest.raises(ValueError, match="whole batches"):
        length_grouped(torch.ones(10), 4, 2, torch.Generator())


def test_in_memory_batches_group_text_by_length():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 65, (203,), generator=gen)
    x, y = torch.arange(203).view(-1, 1), torch.zeros(203)
    grouped = in_memory_batches(x, y, 10, seed=3, lengths=lengths, window_batches=50)
    plain = in_memory_batches(x, y, 10, seed=3)
    for epoch in range(2):
        g = [b[0].flatten() for b in grouped(epoch)]
        p = [b[0].flatten() for b in plain(epoch)]
        assert len(g) == len(p) == 20
        # the same 200 entries as the epoch's random batches (the 3 of the partial batch dropped)
        assert torch.equal(torch.cat(g).sort().values, torch.cat(p).sort().values)
        assert padded(g, lengths) < 0.7 * padded(p, lengths)
    assert not torch.equal(torch.cat([b[0] for b in grouped(0)]), torch.cat([b[0] for b in grouped(1)]))

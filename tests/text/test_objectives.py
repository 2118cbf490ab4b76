import math

import torch

from pipeline.modalities.text.objectives import IGNORE, clm_loss, mask_tokens, mlm_loss

SPECIAL = [0, 1, 2, 3, 4]  # pad unk cls sep mask
MASK, V = 4, 50


def _batch(n=400, L=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (n, L), generator=g)
    ids[:, 0] = 2
    lengths = torch.randint(2, L + 1, (n,), generator=g)
    att = (torch.arange(L)[None] < lengths[:, None]).long()
    ids[torch.arange(n), lengths - 1] = 3
    ids[att == 0] = 0
    return ids, att


def test_masking_proportions_and_invariants():
    ids, att = _batch()
    inp, lab = mask_tokens(ids, att, SPECIAL, MASK, V, torch.Generator().manual_seed(1))
    eligible = att.bool() & (ids >= 5)
    chosen = lab != IGNORE
    assert not (chosen & ~eligible).any()  # special and padding never chosen
    assert torch.equal(lab[chosen], ids[chosen])
    assert torch.equal(inp[~chosen], ids[~chosen])  # unchosen unchanged
    # naive restatement of the proportions
    n_el = eligible.sum().item()
    frac = chosen.sum().item() / n_el
    assert abs(frac - 0.15) < 0.01
    c = chosen.sum().item()
    m = (inp[chosen] == MASK).sum().item() / c
    same = (inp[chosen] == ids[chosen]).sum().item() / c
    rand = 1 - m - same
    assert abs(m - 0.8) < 0.02 and abs(same - (0.1 + 0.1 / 45)) < 0.02 and abs(rand - 0.1) < 0.02
    assert (inp[chosen & (inp != MASK)] >= 5).all()  # random tokens are non-special


def test_masking_deterministic():
    ids, att = _batch(50)
    a = mask_tokens(ids, att, SPECIAL, MASK, V, torch.Generator().manual_seed(3))
    b = mask_tokens(ids, att, SPECIAL, MASK, V, torch.Generator().manual_seed(3))
    c = mask_tokens(ids, att, SPECIAL, MASK, V, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def _lse(row):
    mx = max(row)
    return mx + math.log(sum(math.exp(x - mx) for x in row))


def test_losses_against_naive_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 11, (3, 7), generator=g)
    att = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    labels = torch.full((3, 7), IGNORE)
    labels[0, 1], labels[1, 3], labels[2, 0] = 5, 2, 9
    tot, n = 0.0, 0
    for i in range(3):
        for t in range(7):
            if labels[i, t] != IGNORE:
                row = logits[i, t].tolist()
                tot += _lse(row) - row[labels[i, t]]
                n += 1
    assert abs(mlm_loss(logits, labels).item() - tot / n) < 1e-6
    tot, n = 0.0, 0
    for i in range(3):
        for t in range(6):
            if att[i, t + 1]:
                row = logits[i, t].tolist()
                tot += _lse(row) - row[ids[i, t + 1]]
                n += 1
    assert abs(clm_loss(logits, ids, att).item() - tot / n) < 1e-6


def test_padding_never_chosen_even_with_normal_ids():
    # padding judged by the attention mask, not by the id: fill padded slots with ordinary ids
    ids, att = _batch(200)
    ids[att == 0] = 7
    _, lab = mask_tokens(ids, att, SPECIAL, MASK, V, torch.Generator().manual_seed(2))
    assert not (lab[att == 0] != IGNORE).any()

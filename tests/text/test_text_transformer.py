import pytest
import torch

from pipeline.modalities.text.encoder import TextTransformer
from pipeline.modalities.text.objectives import clm_loss, mask_tokens, mlm_loss


def _ids(n=3, L=10, V=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, V, (n, L), generator=g), torch.ones(n, L, dtype=torch.long)


@pytest.mark.parametrize("causal", [False, True])
def test_shapes_padding_grad(causal):
    torch.manual_seed(0)
    m = TextTransformer(40, dim=32, depth=2, heads=4, max_len=32, causal=causal).eval()
    ids, att = _ids()
    h = m(ids, att)
    assert h.shape == (3, 10, 32) and m.features(ids, att).shape == (3, 32)
    assert m.logits(h).shape == (3, 10, 40)
    padded = torch.cat([ids, torch.zeros(3, 5, dtype=torch.long)], 1)
    patt = torch.cat([att, torch.zeros(3, 5, dtype=torch.long)], 1)
    assert torch.allclose(m.features(ids, att), m.features(padded, patt), atol=1e-5)
    m.train()
    m.logits(m(ids, att)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_causal_never_sees_the_future():
    torch.manual_seed(0)
    m = TextTransformer(40, dim=32, depth=2, heads=4, max_len=32, causal=True).eval()
    ids, att = _ids()
    for t in range(9):
        other = ids.clone()
        other[:, t + 1] = (other[:, t + 1] + 1 - 5) % 35 + 5
        a, b = m(ids, att), m(other, att)
        assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6)
        assert not torch.allclose(a[:, t + 1], b[:, t + 1])
    bi = TextTransformer(40, dim=32, depth=2, heads=4, max_len=32, causal=False).eval()
    other = ids.clone(); other[:, -1] = 5 + (ids[:, -1] - 4) % 35
    assert not torch.allclose(bi(ids, att)[:, 0], bi(other, att)[:, 0])


@pytest.mark.parametrize("causal", [False, True])
def test_text_features_in_length_sorted_batches_equal_one_entry_at_a_time(causal):
    """``encoder_features`` sorts entries by length and cuts each forward pass to its longest
    entry: every entry's features are still its own, in input order."""
    from pipeline.config import EncoderParams
    from pipeline.eval.features import encoder_features
    from pipeline.modalities.text import TEXT_BATCH
    from pipeline.modalities.text.encoder import TextEncoder

    torch.manual_seed(0)
    enc = TextEncoder(EncoderParams(arch="transformer", dim=32, depth=2, heads=4, causal=causal), vocab_size=40, max_length=24).eval()
    g = torch.Generator().manual_seed(1)
    n = 2 * TEXT_BATCH + 7
    lengths = torch.randint(1, 25, (n,), generator=g)
    att = (torch.arange(24)[None] < lengths[:, None]).long()
    packed = torch.stack([torch.randint(5, 40, (n, 24), generator=g) * att, att], 1)
    feats = encoder_features(enc, torch.device("cpu"))(packed)
    with torch.no_grad():
        one_by_one = torch.cat([enc(packed[i : i + 1]) for i in range(n)]).numpy()
    assert feats.shape == (n, 32)
    assert abs(feats - one_by_one).max() < 1e-5

import shutil
from pathlib import Path

import pytest
import torch

from pipeline.data import text as T
from pipeline.data.tokenizer import encode_batch, train_tokenizer
from pipeline.models.text_transformer import TextTransformer
from pipeline.text.objectives import clm_loss, mask_tokens, mlm_loss

pytestmark = pytest.mark.skipif(not Path(T.FORTUNE_DIR, "people").exists(), reason="fortunes not installed")


@pytest.mark.parametrize("causal", [False, True])
def test_loss_decreases_on_fortunes(causal):
    texts = T.read_entries(Path(T.FORTUNE_DIR, "people"))[:512]
    tok = train_tokenizer(texts, 500)
    V = tok.get_vocab_size()
    ids, att = encode_batch(tok, texts, max_length=48)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    m = TextTransformer(V, dim=64, depth=2, heads=4, max_len=48, causal=causal)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for step in range(50):
        sl = slice((step * 32) % 512, (step * 32) % 512 + 32)
        x, a = ids[sl], att[sl]
        if causal:
            loss = clm_loss(m.logits(m(x, a)), x, a)
        else:
            inp, lab = mask_tokens(x, a, [0, 1, 2, 3, 4], 4, V, g)
            loss = mlm_loss(m.logits(m(inp, a)), lab)
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(causal, first, last)
    assert last < first - 0.5  # measured: MLM 6.06 -> 5.36, CLM 6.03 -> 5.15 (ln V = 6.2)

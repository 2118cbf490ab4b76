import math

import numpy as np
import pytest
import torch

from pipeline.config import AugmentParams, EncoderParams, parse_params
from pipeline.errors import UserError
from pipeline.methods.beit import BEiT, KMeansTokenizer, beit_loss, block_mask
from pipeline.models.encoder import Encoder
from pipeline.models.vit import patchify

TINY = EncoderParams(arch="vit", patch_size=4, dim=32, depth=2, heads=2, mlp_ratio=2.0, pos_embed="learned")
SMALL = BEiT.Params(codebook_size=64, tokenizer_patches=2000, head_blocks=0)


@pytest.fixture(scope="module")
def real_images(fmnist_small) -> torch.Tensor:
    train, _ = fmnist_small
    return torch.from_numpy(train.images[:64].copy()).permute(0, 3, 1, 2).contiguous()  # uint8 [64, 1, 28, 28]


def _beit(params=SMALL, seed=0) -> BEiT:
    torch.manual_seed(0)
    return BEiT(Encoder(TINY, 1, [0.286], [0.353], 28), params, AugmentParams(), seed, torch.device("cpu"))


def test_tokenizer_fitted_by_prepare_is_deterministic_and_in_range(real_images):
    a, b, other = _beit(), _beit(), _beit(seed=1)
    for m in (a, b, other):
        m.prepare(real_images)
    assert a.tokenizer.fitted and torch.equal(a.tokenizer.codebook, b.tokenizer.codebook)
    assert not torch.equal(a.tokenizer.codebook, other.tokenizer.codebook)
    ids = a.tokenizer.tokenize(patchify(a.encoder.normalise(real_images.float() / 255), 4))
    assert ids.shape == (64, 49) and ids.dtype == torch.long
    assert ids.min() >= 0 and ids.max() < 64
    assert len(ids.unique()) > 16  # the codebook is used, not collapsed onto a few words


def test_tokenize_is_nearest_codeword():
    tok = KMeansTokenizer(5, 3)
    tok.codebook.copy_(torch.randn(5, 3))
    tok.fitted.fill_(True)
    patches = torch.randn(2, 4, 3)
    ids = tok.tokenize(patches)
    for i in range(2):
        for l in range(4):
            dists = [sum((a - b) ** 2 for a, b in zip(patches[i, l].tolist(), c.tolist())) for c in tok.codebook]
            assert ids[i, l].item() == int(np.argmin(dists))


def test_unfitted_tokenizer_refuses():
    with pytest.raises(RuntimeError, match="prepare"):
        _beit()(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


def test_checkpoint_carries_codebook(real_images):
    a = _beit()
    a.prepare(real_images)
    b = _beit()
    b.load_state_dict(a.state_dict())
    assert b.tokenizer.fitted and torch.equal(b.tokenizer.codebook, a.tokenizer.codebook)
    b.load_extra_state(a.extra_state())
    assert torch.equal(a.masks(8, torch.device("cpu")), b.masks(8, torch.device("cpu")))


def naive_masked_ce(logits, targets, mask):
    total, count = 0.0, 0
    for i in range(logits.shape[0]):
        for l in range(logits.shape[1]):
            if mask[i, l]:
                row = logits[i, l].tolist()
                total += -row[targets[i, l]] + math.log(sum(math.exp(v) for v in row))
                count += 1
    return total / count


def test_loss_only_on_masked_positions():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 16, 10, generator=gen)
    targets = torch.randint(0, 10, (3, 16), generator=gen)
    mask = torch.rand(3, 16, generator=gen) < 0.4
    loss = beit_loss(logits, targets, mask)
    assert abs(loss.item() - naive_masked_ce(logits, targets, mask)) < 1e-5
    changed = torch.where(mask.unsqueeze(-1), logits, torch.randn_like(logits) * 10)
    assert torch.equal(beit_loss(changed, torch.where(mask, targets, 0), mask), loss)


def test_masked_patches_enter_only_as_the_mask_embedding():
    """Changing the pixels of masked patches changes no logit: the ViT never sees them."""
    method = _beit().eval()
    x = torch.rand(2, 1, 28, 28)
    mask = method.masks(2, x.device)
    logits = method.predict(x, mask)
    assert logits.shape == (2, 49, 64)
    y = x.clone()
    for i in range(2):
        for l in torch.nonzero(mask[i]).flatten().tolist():
            r, c = divmod(l, 7)
            y[i, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = torch.rand(1, 4, 4)
    assert not torch.equal(x, y)
    torch.testing.assert_close(method.predict(y, mask), logits)


def test_block_mask_ratio_and_blocks():
    rng = np.random.default_rng(0)
    masks = np.stack([block_mask(7, 20, 4, 0.3, rng) for _ in range(300)])
    counts = masks.reshape(300, -1).sum(1)
    assert counts.max() <= 20 and counts.mean() > 18  # ~40% of 49, never more
    assert len({m.tobytes() for m in masks}) > 250  # random per image
    # blockwise: masked patches cluster (most have a masked 4-neighbour), unlike random masking
    m = masks.astype(int)
    neighbours = np.zeros_like(m)
    neighbours[:, 1:] += m[:, :-1]
    neighbours[:, :-1] += m[:, 1:]
    neighbours[:, :, 1:] += m[:, :, :-1]
    neighbours[:, :, :-1] += m[:, :, 1:]
    assert ((neighbours > 0) & (m == 1)).sum() / m.sum() > 0.95


def test_random_masking_option_masks_exact_count():
    method = _beit(BEiT.Params(codebook_size=64, masking="random"))
    mask = method.masks(16, torch.device("cpu"))
    assert (mask.sum(1) == round(0.4 * 49)).all()


def test_needs_vit_encoder():
    with pytest.raises(UserError, match=r"encoder: \{arch: vit\}"):
        BEiT(Encoder(EncoderParams(width=8), 1, [0.3], [0.3], 28), BEiT.Params(), AugmentParams(), 0, torch.device("cpu"))


def test_params_yaml_section(default_params_dict):
    params = parse_params(default_params_dict)
    # params.yaml holds the paper's defaults, except the token head's depth (see its comment there)
    assert params.method_params["beit"] == BEiT.Params()
    assert params.encoder_for("beit").arch == "vit" and params.pretrain_for("beit").optimizer == "adamw"


def test_head_blocks_sit_between_encoder_and_token_classifier(real_images):
    """head_blocks > 0 adds trained blocks above the encoder that the evaluations never see."""
    plain, deep = _beit(), _beit(SMALL.model_copy(update={"head_blocks": 2}))
    assert plain.encoder.state_dict().keys() == deep.encoder.state_dict().keys()  # same evaluated encoder
    assert len(deep.head_blocks) == 3 and len(plain.head_blocks) == 0  # 2 blocks + LayerNorm
    enc_ids = {id(p) for p in deep.encoder.parameters()}
    head = list(deep.head_blocks.parameters())
    assert head and not any(id(p) in enc_ids for p in head)
    assert {id(p) for p in head} <= {id(p) for p in deep.optimized_parameters()}  # trained
    deep.prepare(real_images)
    x = deep.encoder.normalise(real_images[:4].float() / 255)
    mask = deep.masks(4, x.device)
    before = deep.predict(x, mask)
    with torch.no_grad():
        deep.head_blocks[0].linear1.weight.mul_(2)  # the head changes the logits, not the features
    assert not torch.allclose(deep.predict(x, mask), before)
    out = deep.training_step(real_images[:16])
    out["loss"].backward()
    assert all(p.grad is not None for p in head[:2])

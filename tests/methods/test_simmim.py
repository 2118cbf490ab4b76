import torch

from pipeline.methods._masking import block_mask, masked_image_ratios, random_patch_mask
from pipeline.methods.simmim import simmim_loss
from tests.methods.vit_common import assert_matches_naive


def naive_simmim(pred, target, mask):
    """SimMIM's Eq. 1: 1/Omega(x_M) ||y_M - x_M||_1, Omega = the number of masked pixel values."""
    n, length, p = pred.shape
    total, count = 0.0, 0
    for i in range(n):
        for l in range(length):
            if mask[i, l]:
                for j in range(p):
                    total = total + (pred[i, l, j] - target[i, l, j]).abs()
                count += p
    return total / count


def test_loss_matches_formula():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 5, generator=g) < 0.5
    mask[0, 0] = True
    assert_matches_naive(simmim_loss, naive_simmim, [pred, target, mask])


def test_random_patch_mask_masks_exactly_the_ratio():
    g = torch.Generator().manual_seed(0)
    mask = random_patch_mask(64, 49, 0.6, g, torch.device("cpu"))
    assert mask.dtype == torch.bool and (mask.sum(1) == round(0.6 * 49)).all()
    assert not (mask == mask[0]).all()  # a different mask per image
    per_image = random_patch_mask(3, 10, torch.tensor([0.0, 0.5, 1.0]), g, torch.device("cpu"))
    assert per_image.sum(1).tolist() == [0, 5, 10]


def test_block_masks_respect_the_budget_and_the_probability():
    g = torch.Generator().manual_seed(0)
    ratios = masked_image_ratios(400, (0.1, 0.5), 0.5, g, torch.device("cpu"))
    assert 150 < int((ratios > 0).sum()) < 250 and float(ratios.max()) <= 0.5
    mask = block_mask(400, 7, ratios, 4.0, 0.3, 10, g, torch.device("cpu"))
    counts = mask.sum(1)
    assert (counts <= (ratios * 49).round()).all() and (counts[ratios == 0] == 0).all()
    masked = counts[ratios > 0].float()
    assert masked.mean() > 0.7 * (ratios[ratios > 0] * 49).round().mean()  # mostly filled to the budget
    # blocks: a masked patch usually has a masked 4-neighbour (random masks at 30% rarely do)
    grid = mask.view(-1, 7, 7)
    neighbour = torch.zeros_like(grid)
    neighbour[:, 1:] |= grid[:, :-1]
    neighbour[:, :-1] |= grid[:, 1:]
    neighbour[:, :, 1:] |= grid[:, :, :-1]
    neighbour[:, :, :-1] |= grid[:, :, 1:]
    assert (grid & neighbour).sum() > 0.9 * grid.sum()

import torch

from pipeline.methods.ijepa import ijepa_loss
from tests.methods.vit_common import assert_matches_naive, tiny_method


def naive_ijepa(pred, target):
    """I-JEPA's Eq. 1, 1/M sum_i sum_{j in B_i} ||s_hat_j - s_j||^2, divided by the block size P and
    the width D, averaged over the N images."""
    m, n, p, d = pred.shape
    total = 0.0
    for i in range(m):
        for b in range(n):
            for j in range(p):
                total = total + sum((pred[i, b, j, c] - target[i, b, j, c]) ** 2 for c in range(d))
    return total / (m * n * p * d)


def test_loss_matches_formula():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    assert_matches_naive(ijepa_loss, naive_ijepa, [pred, target])


def test_blocks_are_rectangles_and_the_context_drops_the_targets():
    method = tiny_method("ijepa", target_scale=[0.15, 0.2], context_scale=[0.85, 1.0])
    method.encoder.backbone.grid = 7  # sample on the paper-like 7x7 grid (sampling reads only the grid)
    targets, context, pad = method.sample_blocks(32, torch.device("cpu"))
    m, n, p = targets.shape
    assert (m, n) == (4, 32) and 4 <= p <= 12  # 0.15-0.2 of 49 patches, rounded to a rectangle; one size per batch
    for block in (*targets.flatten(0, 1)[:20], *context[:5]):
        rows, cols = block // 7, block % 7
        h, w = len(rows.unique()), len(cols.unique())
        assert h * w == len(block) == len(block.unique())  # a full h x w rectangle
    assert context.shape[1] == 36  # 0.85-1 of the grid, square, kept below the grid (the reference)
    for b in range(n):
        in_target = set(targets[:, b].flatten().tolist())
        assert {i for i, d in zip(context[b].tolist(), pad[b].tolist()) if d} == in_target & set(context[b].tolist())

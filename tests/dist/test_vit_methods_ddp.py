"""Cross-rank statistics of the ViT methods in a real 2-process gloo group, equal to one
process over the whole batch: iBOT's centres, DINOv2's Sinkhorn-Knopp centring (all rows and
the masked patches only), MSN's Sinkhorn targets and mean entropy (loss and gradient)."""

from __future__ import annotations

import torch

from tests.dist.group import WORLD, spawn


def _logits():
    g = torch.Generator().manual_seed(2)
    keep = torch.rand(12, generator=g) < 0.5
    keep[0] = keep[7] = True
    return torch.randn(12, 6, generator=g, dtype=torch.float64), keep


def _msn_inputs():
    g = torch.Generator().manual_seed(3)
    return (torch.randn(2, 8, 4, generator=g, dtype=torch.float64), torch.randn(8, 4, generator=g, dtype=torch.float64),
            torch.randn(5, 4, generator=g, dtype=torch.float64))


def _msn(anchors, targets, protos):
    from pipeline.methods.msn import msn_loss

    anchors = anchors.clone().requires_grad_()
    ce, me_max = msn_loss(anchors, targets, protos, 0.1, 0.25, 3)
    loss = ce + me_max
    loss.backward()
    return loss.detach(), anchors.grad


def _rank(rank: int, out: str) -> dict:
    from pipeline.methods.dinov2 import sinkhorn_knopp
    from tests.methods.vit_common import tiny_method

    logits, keep = _logits()
    mine = slice(rank * 6, rank * 6 + 6)
    results = {"sinkhorn": sinkhorn_knopp(logits[mine], 0.5, 3),
               "sinkhorn_masked": sinkhorn_knopp(logits[mine], 0.5, 3, keep[mine])}
    anchors, targets, protos = _msn_inputs()
    results["msn"] = _msn(anchors[:, rank * 4:rank * 4 + 4], targets[rank * 4:rank * 4 + 4], protos)
    ibot, seen = tiny_method("ibot"), []
    ibot.teacher_head.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    images = torch.randint(0, 256, (8, 1, 28, 28), generator=torch.Generator().manual_seed(rank), dtype=torch.uint8)
    ibot(images)
    results["ibot"] = (ibot._batch_centers, seen[0])
    return results


def test_vit_method_statistics_cross_ranks(tmp_path):
    from pipeline.methods.dinov2 import sinkhorn_knopp

    ranks = spawn(_rank, tmp_path, timeout=90)
    logits, keep = _logits()
    for key, k in (("sinkhorn", None), ("sinkhorn_masked", keep)):
        whole = sinkhorn_knopp(logits, 0.5, 3, k)
        torch.testing.assert_close(torch.cat([r[key] for r in ranks]), whole, atol=1e-12, rtol=1e-10)
        assert not torch.allclose(ranks[0][key], sinkhorn_knopp(logits[:6], 0.5, 3, None if k is None else k[:6]))
    # MSN: the ranks' mean loss is the one-process loss; each rank's gradient WORLD x its slice (DDP averages)
    anchors, targets, protos = _msn_inputs()
    loss, grad = _msn(anchors, targets, protos)
    torch.testing.assert_close(sum(r["msn"][0] for r in ranks) / WORLD, loss, atol=1e-12, rtol=1e-10)
    for rank, r in enumerate(ranks):
        torch.testing.assert_close(r["msn"][1], WORLD * grad[:, rank * 4:rank * 4 + 4], atol=1e-12, rtol=1e-10)
    alone = _msn(anchors[:, :4], targets[:4], protos)[0]
    assert not torch.isclose(ranks[0]["msn"][0], alone)  # the statistics did cross ranks
    # iBOT: both centres move by the mean over every rank's teacher outputs
    teacher = torch.cat([r["ibot"][1] for r in ranks])  # [2 ranks x 2B, 1 + L, K]
    for r in ranks:
        cls, patch = r["ibot"][0]
        torch.testing.assert_close(cls, teacher[:, 0].mean(0), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(patch, teacher[:, 1:].mean((0, 1)), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ranks[0]["ibot"][0][0], ranks[0]["ibot"][1][:, 0].mean(0), atol=1e-5)

"""The methods' cross-rank statistics in a real process group (2 processes, gloo), the
tests that ``tests/methods``' thread-based ``run_as_ranks`` stands in for: SwAV's Sinkhorn
sums, VICReg's and Barlow Twins' batch statistics, DINO's center, SimCLR's negatives.

A real ``all_gather`` sends each rank's gradient for the gathered copies back to their
owners and sums them (reduce-scatter): for a loss every rank computes identically over the
global batch, a rank's local gradient is ``world`` times its slice of the one-process
gradient, and DDP's mean over ranks divides it back. The threads fake only passes the
caller's own slice, which hides exactly this; here it is asserted.
"""

from __future__ import annotations

import torch

from tests.dist.group import WORLD, spawn


def _z():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 4, generator=g) * 0.5, torch.randn(8, 4, generator=g)


def _vicreg(z1, z2):
    from pipeline.methods.vicreg import vicreg_loss

    return vicreg_loss(z1, z2, 25.0, 25.0, 1.0, 1e-4)[0]


def _barlow(z1, z2):
    from pipeline.methods.barlow_twins import barlow_twins_loss

    return barlow_twins_loss(z1, z2, 0.0051, 1.0)


def _simclr(z1, z2):
    from pipeline.methods.simclr import nt_xent

    return nt_xent(z1, z2, 0.5)


LOSSES = {"vicreg": _vicreg, "barlow_twins": _barlow}


def _sinkhorn_scores():
    g = torch.Generator().manual_seed(2)
    return torch.nn.functional.normalize(torch.randn(10, 3, generator=g), dim=1) @ \
        torch.nn.functional.normalize(torch.randn(4, 3, generator=g), dim=1).T  # [10, 4] cosine scores


def _tiny_dino():
    from pipeline.config import AugmentParams, EncoderParams
    from pipeline.methods.dino import DINO
    from pipeline.models.encoder import Encoder

    torch.manual_seed(0)
    encoder = Encoder(EncoderParams(width=8), 1, [0.286], [0.353])
    params = DINO.Params(out_dim=32, hidden_dim=32, bottleneck_dim=16, num_local_crops=2)
    return DINO(encoder, params, AugmentParams(), 0, torch.device("cpu"))


def _images():
    return torch.randint(0, 256, (16, 1, 28, 28), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)


def _rank(rank: int, out: str) -> dict:
    from pipeline.methods.swav import sinkhorn

    results = {}
    z1, z2 = _z()
    for name, loss_fn in {**LOSSES, "simclr": _simclr}.items():
        mine = z1.chunk(WORLD)[rank].clone().requires_grad_()
        loss = loss_fn(mine, z2.chunk(WORLD)[rank])
        loss.backward()
        results[name] = (loss.detach(), mine.grad)
    results["sinkhorn"] = sinkhorn(_sinkhorn_scores().chunk(WORLD)[rank], 0.05, 3)
    dino, teacher_out = _tiny_dino(), []
    dino.teacher_head.register_forward_hook(lambda mod, i, o: teacher_out.append(o.detach()))
    dino(_images().chunk(WORLD)[rank])
    results["dino"] = (dino._batch_center, teacher_out[0])
    return results


def test_cross_rank_statistics_in_a_process_group(tmp_path):
    from pipeline.methods.swav import sinkhorn

    ranks = spawn(_rank, tmp_path, timeout=60)
    z1, z2 = _z()
    for name, loss_fn in LOSSES.items():  # a loss over the global batch, the same on every rank
        full1 = z1.clone().requires_grad_()
        full = loss_fn(full1, z2)
        full.backward()
        local_only = loss_fn(z1[:4], z2[:4])
        for rank, r in enumerate(ranks):
            loss, grad = r[name]
            torch.testing.assert_close(loss, full.detach(), atol=1e-5, rtol=1e-5, msg=name)
            torch.testing.assert_close(grad, WORLD * full1.grad.chunk(WORLD)[rank], atol=1e-5, rtol=1e-5, msg=name)
        assert not torch.isclose(ranks[0][name][0], local_only, atol=1e-3), name  # the statistics did cross ranks
    # SimCLR: each rank's loss is the mean over its own rows; their mean is the global loss
    full1 = z1.clone().requires_grad_()
    full = _simclr(full1, z2)
    full.backward()
    torch.testing.assert_close(sum(r["simclr"][0] for r in ranks) / WORLD, full.detach(), atol=1e-5, rtol=1e-5)
    for rank, r in enumerate(ranks):  # d(sum of ranks' losses)/d(my rows) = WORLD * d(global mean)/d(my rows)
        torch.testing.assert_close(r["simclr"][1], WORLD * full1.grad.chunk(WORLD)[rank], atol=1e-5, rtol=1e-5)
    # SwAV's Sinkhorn normalises over the global batch: the halves' codes are the whole batch's
    scores = _sinkhorn_scores()
    torch.testing.assert_close(torch.cat([r["sinkhorn"] for r in ranks]), sinkhorn(scores, 0.05, 3), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ranks[0]["sinkhorn"], sinkhorn(scores.chunk(WORLD)[0], 0.05, 3), atol=1e-3)
    # DINO's center moves by the mean of every rank's teacher outputs, not rank 0's alone
    teacher = torch.cat([r["dino"][1] for r in ranks])  # [both ranks' 2 global crops, K]
    for r in ranks:
        torch.testing.assert_close(r["dino"][0], teacher.mean(dim=0), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ranks[0]["dino"][0], ranks[0]["dino"][1].mean(dim=0), atol=1e-4)

"""The new methods' cross-rank terms in a real process group (2 processes, gloo): each rank's
loss on its half of a batch, averaged over the ranks, equals one process's loss on the whole
batch, and each rank's gradient is ``world`` times its slice of the one-process gradient (DDP's
mean over ranks divides it back; see test_gathers.py). NNCLR's queue after an enqueue is the
same on both ranks and equals the one-process queue."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.dist.group import WORLD, spawn


def _losses() -> dict:
    """name -> loss of (a, b) [N, D] halves (mmcr: a [N, 2, D], b unused)."""
    from pipeline.methods.dcl import dcl_loss
    from pipeline.methods.debiased import debiased_loss
    from pipeline.methods.hypersphere import hypersphere_loss
    from pipeline.methods.mmcr import mmcr_loss
    from pipeline.methods.mocov3 import contrastive_loss
    from pipeline.methods.nnclr import nearest_neighbour, nnclr_loss
    from pipeline.methods.tico import tico_loss

    queue = _queue()
    return {
        "mocov3": lambda a, b: contrastive_loss(a, b, 0.2),
        "nnclr": lambda a, b: nnclr_loss(nearest_neighbour(b, queue), a, 0.1),
        "dcl": lambda a, b: dcl_loss(a, b, 0.1),
        "dclw": lambda a, b: dcl_loss(a, b, 0.1, 0.5),
        "hypersphere": lambda a, b: hypersphere_loss(a, b, 2.0, 2.0, 1.0, 1.0),
        "debiased": lambda a, b: debiased_loss(a, b, 0.5, 0.1),
        "tico": lambda a, b: tico_loss(a, b, _c(), 0.9, 20.0)[0],
        "mmcr": lambda a, b: mmcr_loss(torch.stack([a, b], dim=1), 5e-3),
    }


def _z():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randn(8, 6, generator=g, dtype=torch.float64)


def _queue():
    return F.normalize(torch.randn(5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64), dim=1)


def _c():
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return x.T @ x / 10


def _nnclr(queue_size: int):
    from tests.methods.losscheck import tiny
    from pipeline.methods.nnclr import NNCLR

    return tiny(NNCLR, queue_size=queue_size, projection_dim=6, hidden_dim=8, predictor_hidden_dim=8)


def _rank(rank: int, out: str) -> dict:
    from pipeline import dist
    from pipeline.methods.tico import tico_loss

    a, b = (t.chunk(WORLD)[rank] for t in _z())
    results = {}
    for name, loss_fn in _losses().items():
        mine_a, mine_b = a.clone().requires_grad_(), b.clone().requires_grad_()
        loss = loss_fn(mine_a, mine_b)
        loss.backward()
        results[name] = (loss.detach(), mine_a.grad, mine_b.grad)
    results["tico_c"] = tico_loss(a, b, _c(), 0.9, 20.0)[1]
    method = _nnclr(queue_size=7)  # 8 gathered rows > 7: the ring wraps
    method.enqueue(dist.gather_with_grad(F.normalize(a.float(), dim=1)))
    results["nnclr_queue"] = (method.queue.clone(), int(method.queue_ptr))
    return results


def test_new_methods_cross_rank_terms_in_a_process_group(tmp_path):
    from pipeline.methods.tico import tico_loss

    ranks = spawn(_rank, tmp_path, timeout=300)
    z1, z2 = _z()
    for name, loss_fn in _losses().items():
        full_a, full_b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        full = loss_fn(full_a, full_b)
        full.backward()
        torch.testing.assert_close(sum(r[name][0] for r in ranks) / WORLD, full.detach(), atol=1e-9, rtol=1e-9, msg=name)
        for rank, r in enumerate(ranks):
            for got, want in zip(r[name][1:], (full_a.grad, full_b.grad)):
                assert (got is None) == (want is None), name  # e.g. NNCLR's neighbours get no gradient
                if want is not None:
                    torch.testing.assert_close(got, WORLD * want.chunk(WORLD)[rank], atol=1e-9, rtol=1e-9, msg=name)
        alone = loss_fn(z1.chunk(WORLD)[0], z2.chunk(WORLD)[0])  # rank 0's half without the group
        assert not torch.isclose(ranks[0][name][0], alone, atol=1e-6), f"{name}: nothing crossed the ranks"
    for r in ranks:  # TiCo's running matrix: the global batch's, the same on every rank
        torch.testing.assert_close(r["tico_c"], tico_loss(z1, z2, _c(), 0.9, 20.0)[1], atol=1e-12, rtol=1e-12)
    one = _nnclr(queue_size=7)
    one.enqueue(F.normalize(z1.float(), dim=1))
    for r in ranks:
        assert torch.equal(r["nnclr_queue"][0], one.queue) and r["nnclr_queue"][1] == int(one.queue_ptr)

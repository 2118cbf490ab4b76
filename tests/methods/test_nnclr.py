import pytest
import torch
import torch.nn.functional as F

from pipeline.methods.nnclr import NNCLR, nearest_neighbour, nnclr_loss
from tests.methods.losscheck import assert_resumes_exactly, assert_matches, dot, leaves, tiny, unit


def naive_nnclr(z, p, support, t):
    """NNCLR Eq. 2 with loops: NN(z_i) = argmax_q cos(z_i, q) over the support set;
    L = mean_i -log exp(NN(z_i).p_i / t) / sum_k exp(NN(z_i).p_k / t), NN with stop-gradient."""
    total = 0
    for i in range(len(z)):
        sims = [float(dot(unit(z[i].detach()), support[j])) for j in range(len(support))]
        nn = support[max(range(len(support)), key=sims.__getitem__)].detach()
        logits = [dot(unit(nn), unit(p[k])) / t for k in range(len(p))]
        total = total - torch.log(torch.exp(logits[i]) / sum(torch.exp(s) for s in logits))
    return total / len(z)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_loss_matches_paper_formula(t):
    support = F.normalize(leaves((9, 5), seed=1)[0].detach(), dim=1)
    assert_matches(lambda z, p: nnclr_loss(nearest_neighbour(z, support), p, t),
                   lambda z, p: naive_nnclr(z, p, support, t), leaves((6, 5), (6, 5)))


def test_enqueue_is_a_ring_buffer():
    method = tiny(NNCLR, queue_size=10, projection_dim=3, hidden_dim=8, predictor_hidden_dim=8)
    ring, ptr = list(method.queue.clone()), 0
    g = torch.Generator().manual_seed(1)
    for m in (6, 6, 6, 4, 13):  # 13 > queue_size: only the newest 10 survive
        z = torch.randn(m, 3, generator=g)
        method.enqueue(z)
        for row in z:
            ring[ptr], ptr = row, (ptr + 1) % 10
        assert torch.equal(method.queue, torch.stack(ring))
        assert int(method.queue_ptr) == ptr


def test_step_enqueues_the_first_views_unit_embeddings():
    method = tiny(NNCLR, queue_size=12, hidden_dim=16, projection_dim=8, predictor_hidden_dim=16)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    method.prepare(images)  # a sample of 4 cycled over the 12 rows
    assert torch.equal(method.queue[:4], method.queue[4:8]) and int(method.queue_ptr) == 0
    before = method.queue.clone()
    method(images)["loss"].backward()
    assert int(method.queue_ptr) == 4 and torch.equal(method.queue[4:], before[4:])
    assert torch.allclose(method.queue[:4].norm(dim=1), torch.ones(4)) and not torch.equal(method.queue[:4], before[:4])


def test_resumes_exactly():
    assert_resumes_exactly(NNCLR, queue_size=12, hidden_dim=16, projection_dim=8, predictor_hidden_dim=16)

import math

import torch
import torch.nn.functional as F

from pipeline.config import AugmentParams, EncoderParams
from pipeline.methods.moco import MoCo, info_nce
from pipeline.models.encoder import Encoder
from tests.conftest import random_images


def _moco(**params) -> MoCo:
    torch.manual_seed(0)
    encoder = Encoder(EncoderParams(layers=[1], width=8), 1, [0.5], [0.5])
    return MoCo(encoder, MoCo.Params(**params), AugmentParams(), 0, torch.device("cpu"))


def naive_info_nce(q, k, queue, t):
    """MoCo Eq. 1 with loops: L_i = -log exp(q.k+/t) / (exp(q.k+/t) + sum_j exp(q.queue_j/t))."""
    total = 0.0
    for i in range(len(q)):
        qi = q[i] / q[i].norm()
        pos = math.exp(float(qi @ (k[i] / k[i].norm())) / t)
        neg = sum(math.exp(float(qi @ queue[j]) / t) for j in range(len(queue)))
        total += -math.log(pos / (pos + neg))
    return total / len(q)


def test_info_nce_matches_paper_formula():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    queue = F.normalize(torch.randn(7, 4, generator=g), dim=1)
    for t in (0.07, 0.2):
        assert abs(info_nce(q, k, queue, t).item() - naive_info_nce(q, k, queue, t)) < 1e-4


def test_info_nce_positive_is_index_zero():
    q = torch.randn(6, 8)
    queue = F.normalize(torch.randn(32, 8), dim=1)
    assert info_nce(q, q + 0.01 * torch.randn(6, 8), queue, 0.2) < info_nce(q, torch.randn(6, 8), queue, 0.2)


def test_enqueue_wraps_around_when_queue_size_is_not_a_multiple():
    moco = _moco(queue_size=10, projection_dim=3)
    ring = list(moco.queue.clone())  # naive ring buffer: slot i holds the key written there last
    ptr = 0
    g = torch.Generator().manual_seed(1)
    for m in (6, 6, 6, 4, 13):  # 13 > K: only the newest 10 survive
        keys = torch.randn(m, 3, generator=g)
        moco._enqueue(keys)
        for key in keys:
            ring[ptr] = key
            ptr = (ptr + 1) % 10
        assert int(moco.queue_ptr) == ptr
        assert torch.equal(moco.queue, torch.stack(ring))
    # after the 13-key write, the queue is exactly the newest 10 keys, oldest at the pointer
    newest = keys[-10:]
    assert torch.equal(torch.roll(moco.queue, -ptr, dims=0), newest)


def test_training_steps_enqueue_the_latest_gathered_keys():
    moco = _moco(queue_size=10, bn_group_size=2)  # 2N = 8 keys per step: 10 is not a multiple
    images = random_images(4, size=16)
    moco.prepare(images)
    assert torch.allclose(moco.queue.norm(dim=1), torch.ones(10)) and int(moco.queue_ptr) == 0
    written = []
    enqueue = moco._enqueue
    moco._enqueue = lambda keys: (written.append(keys.clone()), enqueue(keys))
    for _ in range(3):
        moco.training_step(images)["loss"].backward()
    assert [len(k) for k in written] == [8, 8, 8] and int(moco.queue_ptr) == 24 % 10
    latest = torch.cat(written)[-10:]  # the 10 newest keys, written at slots 4..9, 0..3
    assert torch.equal(torch.roll(moco.queue, -4, dims=0), latest)
    assert torch.allclose(latest.norm(dim=1), torch.ones(10))


def test_shuffled_groups_come_back_in_order():
    moco = _moco(bn_group_size=2).eval()  # eval BN: the output no longer depends on the grouping
    x = random_images(8, size=16).float() / 255
    perm = torch.randperm(8)
    full = moco.key_projector(moco.key_encoder(x))
    assert torch.allclose(moco._grouped(moco.key_encoder, moco.key_projector, x, perm), full, atol=1e-5)


def test_key_encoder_moves_only_in_after_optimizer_step():
    moco = _moco(queue_size=16, momentum=0.9)
    optimized = {id(p) for p in moco.optimized_parameters()}
    keys = [*moco.key_encoder.parameters(), *moco.key_projector.parameters()]
    assert not any(p.requires_grad for p in keys) and not optimized & {id(p) for p in keys}
    assert {id(p) for p in [*moco.encoder.parameters(), *moco.projector.parameters()]} <= optimized

    opt = torch.optim.SGD(moco.optimized_parameters(), lr=0.5)
    before = [p.clone() for p in keys]
    moco.training_step(random_images(4, size=16))["loss"].backward()
    assert all(p.grad is None for p in keys)
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, keys))  # frozen outside the hook
    online = [*moco.encoder.parameters(), *moco.projector.parameters()]
    moco.after_optimizer_step(0.5)
    for b, k, o in zip(before, keys, online):
        assert torch.allclose(k, 0.9 * b + 0.1 * o)
    assert any(not torch.equal(a, b) for a, b in zip(before, keys))


def test_momentum_schedule():
    assert _moco(momentum=0.99).momentum(0.7) == 0.99
    cosine = _moco(momentum=0.99, momentum_cosine=True)
    assert abs(cosine.momentum(0.0) - 0.99) < 1e-12 and cosine.momentum(1.0) == 1.0
    assert abs(cosine.momentum(0.5) - 0.995) < 1e-12


def test_queue_is_checkpointed():
    state = _moco(queue_size=16).state_dict()
    assert state["queue"].shape == (16, 128) and "queue_ptr" in state

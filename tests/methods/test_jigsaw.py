import itertools
import math

import pytest
import torch

from pipeline.config import AugmentParams, EncoderParams
from pipeline.errors import UserError
from pipeline.methods.jigsaw import (
    Jigsaw, _permutation_set, extract_tiles, jigsaw_loss, permutation_set, shuffle_tiles, standardise_tiles,
)
from pipeline.models.encoder import Encoder


def naive_algorithm_1(count, seed, selection):
    """Noroozi & Favaro's Algorithm 1 as written: keep the candidate list P-bar, remove each
    chosen permutation from it, recompute the full distance matrix D = Hamming(P, P-bar) each
    step and take argmax of its column sums 1^T D ("mean") or column minima ("maxmin")."""
    candidates = torch.tensor(list(itertools.permutations(range(9))))
    j = int(torch.randint(len(candidates), (1,), generator=torch.Generator().manual_seed(seed)))
    chosen = []
    for _ in range(count):
        chosen.append(candidates[j])
        candidates = torch.cat([candidates[:j], candidates[j + 1:]])
        D = (torch.stack(chosen)[:, None, :] != candidates[None, :, :]).sum(-1)  # [|P|, |P-bar|]
        j = int((D.sum(0) if selection == "mean" else D.min(0).values).argmax())
    return torch.stack(chosen)


def min_pairwise_hamming(perms):
    rows = perms.tolist()
    return min(sum(a != b for a, b in zip(p, q)) for p, q in itertools.combinations(rows, 2))


@pytest.mark.parametrize("selection", ["mean", "maxmin"])
def test_permutation_set_follows_algorithm_1_and_is_deterministic(selection):
    perms = permutation_set(6, 3, selection)
    assert torch.equal(perms, naive_algorithm_1(6, 3, selection))
    assert torch.equal(_permutation_set.__wrapped__(6, 3, selection), perms)  # recomputed, not cached
    assert not torch.equal(permutation_set(6, 4, selection), perms)  # the seed picks the start


def test_permutation_set_distinct_and_far_apart():
    count = 24
    perms = permutation_set(count, 0, "maxmin")
    assert perms.shape == (count, 9) and perms.dtype == torch.int64
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == count
    d = min_pairwise_hamming(perms)
    assert d == int(((perms[:, None] != perms[None]).sum(-1) + 99 * torch.eye(count, dtype=torch.long)).min())
    for s in range(5):
        g = torch.Generator().manual_seed(s)
        random_set = torch.stack([torch.randperm(9, generator=g) for _ in range(count)])
        assert d > min_pairwise_hamming(random_set)
    # The paper's summed-distance criterion maximises the *average* distance instead.
    mean_set = permutation_set(count, 0, "mean")
    avg = lambda p: (p[:, None] != p[None]).sum(-1).float().sum().item() / (count * (count - 1))  # noqa: E731
    assert len({tuple(p) for p in mean_set.tolist()}) == count
    assert avg(mean_set) > max(avg(torch.stack([torch.randperm(9, generator=torch.Generator().manual_seed(s))
                                                for _ in range(count)])) for s in range(5))


def test_unshuffled_tiles_reassemble_the_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 2, 27, 27, generator=g)
    tiles = extract_tiles(x, 9, image_crop=1.0, tile_crop=1.0, gen=g)  # no window, no gap jitter
    assert tiles.shape == (4, 9, 2, 9, 9)
    perms = permutation_set(10, 0)[torch.tensor([3, 0, 9, 5])]
    shuffled = shuffle_tiles(tiles, perms)
    for n in range(4):
        for slot in range(9):
            assert torch.equal(shuffled[n, slot], tiles[n, perms[n, slot]])  # slot i holds tile perm[i]
    restored = shuffle_tiles(shuffled, perms.argsort(dim=1))  # the inverse permutation
    image = torch.zeros_like(x)
    for i in range(9):
        r, c = divmod(i, 3)
        image[:, :, 9 * r:9 * r + 9, 9 * c:9 * c + 9] = restored[:, i]
    assert torch.allclose(image, x, atol=1e-5)


def test_jittered_tiles_stay_in_their_cells():
    # Each 30x30 cell holds a constant (its index / 8). With the paper's tile crop (64/75 of a
    # cell at a random offset) every sample of a tile must come from its own cell only.
    cells = torch.arange(9, dtype=torch.float32).view(3, 3) / 8
    x = cells.repeat_interleave(30, 0).repeat_interleave(30, 1).expand(16, 1, 90, 90)
    tiles = extract_tiles(x, 8, image_crop=1.0, tile_crop=64 / 75, gen=torch.Generator().manual_seed(0))
    assert torch.allclose(tiles, (torch.arange(9.0) / 8).view(1, 9, 1, 1, 1).expand_as(tiles), atol=1e-6)
    # ... and the tiles really are jittered: their contents differ between images.
    ramp = torch.linspace(0, 1, 90).expand(16, 1, 90, 90)
    jittered = extract_tiles(ramp, 8, image_crop=225 / 256, tile_crop=64 / 75, gen=torch.Generator().manual_seed(0))
    assert jittered[:, 0].mean(dim=(1, 2, 3)).unique().numel() == 16


def test_standardised_tiles():
    g = torch.Generator().manual_seed(0)
    tiles = torch.rand(3, 9, 2, 5, 5, generator=g) * 0.3 + 0.2
    z = standardise_tiles(tiles)
    assert torch.allclose(z.mean(dim=(2, 3, 4)), torch.zeros(3, 9), atol=1e-5)
    assert torch.allclose(z.std(dim=(2, 3, 4), unbiased=False), torch.ones(3, 9), atol=2e-3)  # eps guard
    assert torch.allclose(standardise_tiles(torch.full((1, 1, 1, 4, 4), 0.7)), torch.zeros(1, 1, 1, 4, 4), atol=1e-4)


def test_jigsaw_loss_is_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(7, 12, generator=g), torch.randint(12, (7,), generator=g)
    naive = sum(-math.log(math.exp(r[y]) / sum(math.exp(v) for v in r)) for r, y in zip(logits.tolist(), labels.tolist())) / 7
    assert abs(jigsaw_loss(logits, labels).item() - naive) < 1e-5


def test_training_step_feeds_standardised_tiles_to_the_backbone():
    torch.manual_seed(0)
    enc = Encoder(EncoderParams(layers=[1, 1], width=8), 1, [0.3], [0.35])
    params = Jigsaw.Params(num_permutations=10, tile_size=12, hidden_dim=16)
    method = Jigsaw(enc, params, AugmentParams(), 0, torch.device("cpu"))
    assert torch.equal(method.permutations, permutation_set(10, 0)) and "permutations" in method.state_dict()
    seen = []
    enc.backbone.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    logits = []
    method.classifier.register_forward_hook(lambda mod, args, out: logits.append(out.detach()))
    gen_state = method.views.gen.get_state()
    out = method(images)
    assert set(out) == {"loss", "permutation_acc"}
    # replay the step's draws on a copy of its generator to get the permutation labels
    g = torch.Generator().set_state(gen_state)
    extract_tiles(images.float() / 255, method.tile_size, params.image_crop, params.tile_crop, g)
    labels = torch.randint(10, (5,), generator=g)
    torch.testing.assert_close(out["loss"].detach(), torch.nn.functional.cross_entropy(logits[0], labels))
    assert out["permutation_acc"].item() == (logits[0].argmax(1) == labels).float().mean().item()
    (inputs,) = seen
    assert inputs.shape == (45, 1, 12, 12)  # 9 tiles per image, each through the encoder on its own
    assert torch.allclose(inputs.mean(dim=(1, 2, 3)), torch.zeros(45), atol=1e-4)
    assert torch.allclose(inputs.std(dim=(1, 2, 3), unbiased=False), torch.ones(45), atol=1e-3)


def test_tiles_default_to_the_encoders_input_size():
    """tile_size None: tiles reach the encoder at the size it is evaluated at; a ViT accepts
    sizes its patch size divides, and another size names the fix."""
    params = Jigsaw.Params(num_permutations=10, hidden_dim=16)
    resnet = Jigsaw(Encoder(EncoderParams(layers=[1, 1], width=8), 1, [0.3], [0.35], 28), params, AugmentParams(), 0,
                    torch.device("cpu"))
    assert resnet.tile_size == 28
    vit_params = EncoderParams(arch="vit", patch_size=4, dim=16, depth=1, heads=2, mlp_ratio=2.0)
    assert Jigsaw(Encoder(vit_params, 1, [0.3], [0.35], 28), params, AugmentParams(), 0, torch.device("cpu")).tile_size == 28
    assert Jigsaw(Encoder(vit_params, 1, [0.3], [0.35], 28), params.model_copy(update={"tile_size": 16}), AugmentParams(),
                  0, torch.device("cpu")).tile_size == 16
    with pytest.raises(UserError, match="jigsaw.tile_size: 14 px does not split into the ViT's 4 px patches"):
        Jigsaw(Encoder(vit_params, 1, [0.3], [0.35], 28), params.model_copy(update={"tile_size": 14}), AugmentParams(), 0,
               torch.device("cpu"))


def test_finalize_reestimates_batchnorm_on_whole_images():
    """After training on tiles, the encoder's BatchNorm statistics are those of whole images."""
    torch.manual_seed(0)
    enc = Encoder(EncoderParams(layers=[1, 1], width=8), 1, [0.3], [0.35], 28)
    method = Jigsaw(enc, Jigsaw.Params(num_permutations=10, hidden_dim=16, tile_dim=8), AugmentParams(), 0,
                    torch.device("cpu"))
    images = torch.randint(0, 256, (512, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    method.train()
    method(images[:32])  # a training step on tiles moves the running statistics
    bn = next(m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    handle = bn.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    method.finalize(images)
    handle.remove()
    whole = torch.cat(seen)  # the first BatchNorm's inputs for all 512 whole images
    assert whole.shape[0] == 512 and whole.shape[-1] == 14  # whole 28 px images through the stride-2 stem
    torch.testing.assert_close(bn.running_mean, whole.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1 and enc.training  # momentum and mode restored
    off = Jigsaw(enc, Jigsaw.Params(num_permutations=10, hidden_dim=16, whole_image_bn=False), AugmentParams(), 0,
                 torch.device("cpu"))
    before = bn.running_mean.clone()
    off.finalize(images[:64])
    assert torch.equal(bn.running_mean, before)

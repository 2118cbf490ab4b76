import torch

from pipeline.config import AugmentParams
from pipeline.modalities.image.views import ViewMaker, random_resized_crop, to_float
from tests.conftest import random_images


def test_views_shape_range_and_per_image_randomness():
    images = random_images(16, channels=3)
    views = ViewMaker(AugmentParams(), seed=0, device=torch.device("cpu"))(images)
    assert views.shape == (16, 3, 28, 28) and views.dtype == torch.float32
    assert views.min() >= 0 and views.max() <= 1
    same = torch.stack([images[0]] * 8)
    v = ViewMaker(AugmentParams(), seed=0, device=torch.device("cpu"))(same)
    assert not torch.allclose(v[0], v[1])  # each image draws its own crop and jitter


def test_views_are_seeded():
    images = random_images(8)
    a = ViewMaker(AugmentParams(), 5, torch.device("cpu"))(images)
    b = ViewMaker(AugmentParams(), 5, torch.device("cpu"))(images)
    c = ViewMaker(AugmentParams(), 6, torch.device("cpu"))(images)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generator_state_restores_exactly():
    images = random_images(8)
    vm = ViewMaker(AugmentParams(), 1, torch.device("cpu"))
    vm(images)
    state = vm.state_dict()
    first = vm(images)
    vm.load_state_dict(state)
    assert torch.equal(first, vm(images))


def test_full_crop_without_flip_is_identity():
    x = to_float(random_images(4))
    g = torch.Generator().manual_seed(0)
    out = random_resized_crop(x, (1.0, 1.0), (1.0, 1.0), hflip=0.0, gen=g)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    flipped = random_resized_crop(x, (1.0, 1.0), (1.0, 1.0), hflip=1.0, gen=g)
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-5, rtol=0)


def test_crop_zooms_in():
    # a quarter-area crop of a left-dark/right-bright image is mostly one side or a clear edge
    x = torch.zeros(1, 1, 28, 28)
    x[..., 14:] = 1.0
    g = torch.Generator().manual_seed(0)
    out = random_resized_crop(x.repeat(64, 1, 1, 1), (0.25, 0.25), (1.0, 1.0), 0.0, g)
    means = out.mean(dim=(1, 2, 3))
    assert means.min() < 0.3 and means.max() > 0.7  # whole-image mean would be 0.5 always

import math

import pytest
import torch

from pipeline.config import AugmentParams, EncoderParams
from pipeline.methods.rotation import Rotation, pad_crop_flip, rotate_all, rotation_loss
from pipeline.models.encoder import Encoder


def naive_rot90_ccw(img: torch.Tensor) -> torch.Tensor:
    """One counter-clockwise quarter turn of ``[C, S, S]`` by its definition:
    out[r, c] = img[c, S-1-r] (the right column becomes the top row)."""
    s = img.shape[-1]
    out = torch.empty_like(img)
    for r in range(s):
        for c in range(s):
            out[:, r, c] = img[:, c, s - 1 - r]
    return out


def test_rotated_batch_matches_label_order_and_rotates_back():
    x = torch.rand(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    rotated, labels = rotate_all(x)
    assert rotated.shape == (12, 2, 5, 5) and labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for i in range(12):
        k, n = int(labels[i]), i % 3
        expected = x[n]
        for _ in range(k):  # label k: k counter-clockwise quarter turns
            expected = naive_rot90_ccw(expected)
        assert torch.equal(rotated[i], expected)
        back = rotated[i]
        for _ in range((4 - k) % 4):  # the remaining quarter turns bring it back upright
            back = naive_rot90_ccw(back)
        assert torch.equal(back, x[n])
        assert torch.equal(torch.rot90(rotated[i], -k, dims=(1, 2)), x[n])


def test_quarter_turn_is_counter_clockwise():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 2] = 1  # top-right corner
    rotated, _ = rotate_all(x)
    corners = [tuple(torch.nonzero(rotated[k, 0])[0].tolist()) for k in range(4)]
    assert corners == [(0, 2), (0, 0), (2, 0), (2, 2)]  # top-right -> top-left -> bottom-left -> bottom-right


def test_rotation_needs_square_images():
    with pytest.raises(ValueError, match="square"):
        rotate_all(torch.zeros(1, 1, 4, 5))


def naive_cross_entropy(logits, labels):
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        total += -math.log(math.exp(row[y]) / sum(math.exp(v) for v in row))
    return total / len(labels)


def test_rotation_loss_is_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(10, 4, generator=g), torch.randint(4, (10,), generator=g)
    assert abs(rotation_loss(logits, labels).item() - naive_cross_entropy(logits, labels)) < 1e-5


def test_pad_crop_flip_is_a_shifted_window_and_keeps_orientation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=g)
    assert torch.equal(pad_crop_flip(x, 0, 0.0, g), x)
    assert torch.equal(pad_crop_flip(x, 0, 1.0, g), x.flip(-1))
    out = pad_crop_flip(x, 2, 0.5, g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for n in range(16):
        # every view is exactly one 8x8 window of the zero-padded image, possibly mirrored
        # left-right; never mirrored top-bottom (that would be a 180-degree turn + flip).
        windows = [(padded[n, :, dy:dy + 8, dx:dx + 8], f) for dy in range(5) for dx in range(5) for f in (0, 1)]
        hits = [f for w, f in windows if torch.equal(out[n], w.flip(-1) if f else w)]
        assert len(hits) == 1
        flips += hits[0]
        assert not torch.equal(out[n], x[n].flip(-2))
    assert 0 < flips < 16


def _tiny_method(seed=0):
    torch.manual_seed(seed)
    enc = Encoder(EncoderParams(layers=[1, 1], width=8), 1, [0.3], [0.35])
    return Rotation(enc, Rotation.Params(hidden_dim=16), AugmentParams(), seed, torch.device("cpu"))


def test_training_step_logs_accuracy_and_is_seeded():
    images = torch.randint(0, 256, (6, 1, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    method, logits = _tiny_method(), []
    method.head.register_forward_hook(lambda mod, args, out: logits.append(out.detach()))
    out1, out2 = method(images), _tiny_method()(images)
    assert set(out1) == {"loss", "rotation_acc"}
    labels = torch.arange(4).repeat_interleave(6)  # rotate_all: every image at 0, then every image at 90, ...
    assert out1["rotation_acc"].item() == (logits[0].argmax(1) == labels).float().mean().item()
    torch.testing.assert_close(out1["loss"].detach(), torch.nn.functional.cross_entropy(logits[0], labels))
    assert out1["loss"].item() == out2["loss"].item()  # same seed -> same crops and flips

"""ResNet family adapted to small images (28x28 .. 96x96).

torchvision's ResNet hard-codes an ImageNet stem (7x7 stride-2 conv + max-pool) and fixed
widths 64..512. Small images need a gentler stem and CPU budgets need narrower widths, so
we assemble the network here from torchvision's own ``BasicBlock``.
"""

from __future__ import annotations

import torch
from torch import nn


def _stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    # imported here, not at the top: importing torchvision takes ~1.5 s (its ops load torch._dynamo),
    # which every stage process would pay, and the text stages build no ResNet
    from torchvision.models.resnet import BasicBlock

    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
        )
    layers = [BasicBlock(in_ch, out_ch, stride=stride, downsample=downsample)]
    layers += [BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class SmallResNet(nn.Module):
    """ResNet with a configurable stem and width.

    Args:
        in_channels: image channels (1 for Fashion-MNIST, 3 for RGB).
        layers: blocks per stage, e.g. ``[2, 2, 2, 2]`` is ResNet-18.
        width: channels of the first stage; stage i has ``width * 2**i``.
        stem_stride: 1 keeps full resolution (CIFAR-style 3x3 stem), 2 halves it first,
            which is ~5x cheaper on CPU for 28x28 inputs.

    Input ``[N, C, H, W]`` float, output ``[N, feature_dim]`` after global average pooling.
    """

    def __init__(self, in_channels: int, layers: list[int], width: int, stem_stride: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages, ch = [], width
        for i, blocks in enumerate(layers):
            out_ch = width * 2**i
            stages.append(_stage(ch, out_ch, blocks, stride=1 if i == 0 else 2))
            ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # channels_last by default, except for narrow networks: on AVX-512 CPUs (PyTorch 2.14.1's
        # oneDNN) the backward of a channels_last 1x1 stride-2 convolution (the downsample shortcut)
        # with fewer than 16 input channels corrupts the heap (a width-8 net crashes in its second
        # epoch at batch 25; 16, 20, 24 and 32 input channels ran clean); NCHW does not
        self.use_channels_last(width >= 16)

    def use_channels_last(self, on: bool) -> "SmallResNet":
        """Weights and activations in channels_last (NHWC, the default from width 16) or NCHW. NHWC runs
        1.3x faster training steps and 1.5x faster inference than NCHW on a 2-core CPU
        (benchmarks/memory_format.py), and it is the layout cuDNN's bf16 kernels want.
        ``.to(device)``, deepcopy and ``load_state_dict`` keep it. The function is the same
        in both; the rounding is not (NHWC convolutions round differently at different
        batch sizes), so results agree to float tolerance, not bit for bit."""
        self.channels_last = on
        return self.to(memory_format=torch.channels_last if on else torch.contiguous_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.pool(self.stages(self.stem(x))).flatten(1)

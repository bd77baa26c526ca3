"""Image encoders built from MONAI's networks and blocks (no torchvision here)."""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import ResNet
from torch import nn

ENCODERS = ("conv4", "resnet")


class ConvEncoder(nn.Sequential):
    """The Conv-4 family of few-shot encoders: ``depth`` x [3x3 conv, batch norm, ReLU, 2x2 max-pool].

    Global average pooling at the end makes it work for any image size (28x28 and larger);
    the embedding has ``hidden`` features. ``norm`` is MONAI's norm name (``"INSTANCE"`` keeps
    no running statistics, which ``torch.func`` transforms such as MAML's need).
    """

    def __init__(self, in_channels: int = 3, hidden: int = 64, depth: int = 4, norm: str = "BATCH") -> None:
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [
                Convolution(spatial_dims=2, in_channels=in_channels if i == 0 else hidden, out_channels=hidden,
                            kernel_size=3, act="RELU", norm=norm),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
        super().__init__(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = hidden

    def split(self) -> tuple[nn.Module, nn.Module]:
        """``(trunk, top)``: every block but the last, and the last block with the pooling."""
        blocks = list(self)
        return nn.Sequential(*blocks[:-4]), nn.Sequential(*blocks[-4:])


class ResNetEncoder(nn.Module):
    """A small 2-D residual network (MONAI's ``ResNet``, ResNet-10 layout: one basic block per stage).

    Four stages (MONAI's ``ResNet`` has four; ``depth`` must be 4) whose widths double up to
    ``hidden`` (``hidden=256``: 32, 64, 128, 256 channels); a 3x3 stem without max-pooling keeps
    detail in 28x28 images, and global average pooling makes any image size work. The
    embedding has ``hidden`` features.
    """

    def __init__(self, in_channels: int = 3, hidden: int = 256, depth: int = 4) -> None:
        super().__init__()
        if depth != 4:
            raise ValueError(f"the resnet encoder has 4 stages; got depth={depth}")
        widths = [max(hidden >> (depth - 1 - i), 1) for i in range(depth)]
        self.net = ResNet(block="basic", layers=[1] * depth, block_inplanes=widths, spatial_dims=2,
                          n_input_channels=in_channels, conv1_t_size=3, conv1_t_stride=1, no_max_pool=True,
                          feed_forward=False)
        self.out_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def split(self) -> tuple[nn.Module, nn.Module]:
        """``(trunk, top)``: the stem and the first three stages, and the last stage with the pooling."""
        net = self.net
        return (nn.Sequential(net.conv1, net.bn1, net.act, net.layer1, net.layer2, net.layer3),
                nn.Sequential(net.layer4, net.avgpool, nn.Flatten()))


def make_encoder(kind: str, in_channels: int, hidden: int, depth: int) -> nn.Module:
    """``"conv4"`` (:class:`ConvEncoder`) or ``"resnet"`` (:class:`ResNetEncoder`); both have ``out_features``."""
    if kind == "conv4":
        return ConvEncoder(in_channels, hidden, depth)
    if kind == "resnet":
        return ResNetEncoder(in_channels, hidden, depth)
    raise ValueError(f"encoder must be one of {ENCODERS}, got {kind!r}")

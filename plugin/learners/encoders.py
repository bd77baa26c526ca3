"""Image encoders built from MONAI's network blocks (no torchvision here)."""

from __future__ import annotations

from monai.networks.blocks import Convolution
from torch import nn


class ConvEncoder(nn.Sequential):
    """The Conv-4 family of few-shot encoders: ``depth`` x [3x3 conv, batch norm, ReLU, 2x2 max-pool].

    Global average pooling at the end makes it work for any image size (28x28 and larger);
    the embedding has ``hidden`` features.
    """

    def __init__(self, in_channels: int = 3, hidden: int = 64, depth: int = 4) -> None:
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [
                Convolution(spatial_dims=2, in_channels=in_channels if i == 0 else hidden, out_channels=hidden,
                            kernel_size=3, act="RELU", norm="BATCH"),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
        super().__init__(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = hidden

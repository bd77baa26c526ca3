"""Small networks for tabular and time-series tasks, built on MONAI's ``FullyConnectedNet``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import FullyConnectedNet
from torch import nn


def mlp(in_features: int, out_features: int, hidden: Sequence[int] = (), act: str = "ELU",
        zero_output: bool = False) -> FullyConnectedNet:
    """A fully connected network (``hidden=()``: linear). ``zero_output`` starts it at 0 everywhere."""
    net = FullyConnectedNet(in_features, out_features, tuple(hidden), act=act)
    if zero_output:
        nn.init.zeros_(net.output.weight)
        nn.init.zeros_(net.output.bias)
    return net


class WithLinearPrior(nn.Module):
    """``net(x) + x @ prior_weight + prior_bias``: a network that learns a correction to a fixed linear model.

    The prior (for example a published dosing formula, or the last reading of a series) is held in
    buffers, so meta-learning and adaptation change only the network.
    """

    def __init__(self, net: nn.Module, in_features: int, out_features: int) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("prior_weight", torch.zeros(in_features, out_features))
        self.register_buffer("prior_bias", torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + x @ self.prior_weight + self.prior_bias

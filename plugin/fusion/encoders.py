"""One encoder per kind of modality: each maps a patient's features to a ``dim``-vector.

Encoders standardise their input with buffers set by :meth:`fit_scaling` (so a saved model carries its
scaling), never produce NaN (unknown values become the training mean, flagged to the network), and
work under ``torch.func`` (``vmap``, ``grad``), so a fusion network can sit inside MAML.

- :class:`TabularEncoder`: EHR features, medications (MONAI ``FullyConnectedNet``);
- :class:`GenotypeEncoder`: one learned embedding per call of each marker (0 = unknown), summed, then an MLP;
- :class:`SeriesEncoder`: laboratory or CGM histories; 1-D convolutions over time (MONAI ``Convolution``),
  pooled over the measured steps, plus the most recent step;
- :class:`ImageEncoder`: any image encoder (an ``nn.Module``, or an object with ``embed(images) -> (N, D)``, such
  as the few-shot imaging learners), frozen, and a learned projection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.networks.blocks import Convolution
from torch import Tensor, nn

from medmeta.fusion.modalities import Modality
from medmeta.learners.networks import mlp


class _Scaled(nn.Module):
    """Holds ``mean`` and ``scale`` buffers over the feature axis ``axis`` of the input."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("scale", torch.ones(n))

    def set_scaling(self, values: np.ndarray) -> None:
        """``values``: ``(rows, n)`` with NaN for unknown; constant or empty columns keep scale 1."""
        with np.errstate(all="ignore"):
            mean = np.nanmean(values, axis=0) if len(values) else np.zeros(values.shape[1])
            scale = np.nanstd(values, axis=0) if len(values) else np.ones(values.shape[1])
        mean = np.where(np.isfinite(mean), mean, 0.0)
        scale = np.where(np.isfinite(scale) & (scale > 1e-8), scale, 1.0)
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))


class TabularEncoder(_Scaled):
    """Standardised features (unknown -> 0, i.e. the mean) through an MLP."""

    def __init__(self, in_features: int, dim: int, hidden: Sequence[int] = (64,)) -> None:
        super().__init__(in_features)
        self.net = mlp(in_features, dim, hidden)

    def fit_scaling(self, x: np.ndarray) -> None:
        self.set_scaling(x)

    def forward(self, x: Tensor) -> Tensor:
        z = (x - self.mean) / self.scale
        return self.net(torch.where(torch.isnan(z), torch.zeros_like(z), z))


class GenotypeEncoder(nn.Module):
    """Marker calls (codes ``1..n``, 0 = unknown) -> sum of one learned embedding per (marker, call) -> MLP.

    The sum is an additive genetic model; the MLP adds interactions between markers.
    """

    def __init__(self, n_calls: Sequence[int], dim: int, hidden: Sequence[int] = (64,)) -> None:
        super().__init__()
        sizes = [n + 1 for n in n_calls]  # + the "unknown" code 0
        self.register_buffer("offsets", torch.as_tensor(np.concatenate([[0], np.cumsum(sizes)[:-1]]), dtype=torch.long))
        self.register_buffer("sizes", torch.as_tensor(sizes, dtype=torch.long))
        self.embedding = nn.Embedding(int(sum(sizes)), dim)
        self.net = mlp(dim, dim, hidden)

    def fit_scaling(self, x: np.ndarray) -> None:
        """Nothing to scale (calls are categories)."""

    def forward(self, x: Tensor) -> Tensor:
        codes = torch.where(torch.isnan(x), torch.zeros_like(x), x).long()
        codes = torch.minimum(codes.clamp(min=0), self.sizes - 1) + self.offsets
        return self.net(torch.nn.functional.elu(self.embedding(codes).sum(-2)))


class SeriesEncoder(_Scaled):
    """``(channels, time)`` histories, NaN where unmeasured, most recent last.

    Each channel is standardised; the network sees the values and a "measured" indicator per channel,
    two 1-D convolutions over time, the mean over measured steps, and the most recent step.
    """

    def __init__(self, channels: int, dim: int, hidden: int = 32, kernel_size: int = 3) -> None:
        super().__init__(channels)
        self.conv = nn.Sequential(
            Convolution(spatial_dims=1, in_channels=2 * channels, out_channels=hidden, kernel_size=kernel_size,
                        act="ELU", norm=None),
            Convolution(spatial_dims=1, in_channels=hidden, out_channels=hidden, kernel_size=kernel_size,
                        act="ELU", norm=None),
        )
        self.out = nn.Linear(hidden + 2 * channels, dim)

    def fit_scaling(self, x: np.ndarray) -> None:
        self.set_scaling(np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]))

    def forward(self, x: Tensor) -> Tensor:
        seen = ~torch.isnan(x)
        z = (x - self.mean[:, None]) / self.scale[:, None]
        z = torch.where(seen, z, torch.zeros_like(z))
        inputs = torch.cat([z, seen.to(z.dtype)], dim=-2)
        features = self.conv(inputs)
        any_seen = seen.any(-2, keepdim=True).to(z.dtype)
        pooled = (features * any_seen).sum(-1) / any_seen.sum(-1).clamp(min=1.0)
        return self.out(torch.cat([pooled, inputs[..., -1]], dim=-1))


class ImageEncoder(nn.Module):
    """A frozen image encoder and a learned projection to ``dim``.

    ``backbone`` is an ``nn.Module`` mapping images to ``(N, D)`` or any object with ``embed(images)``
    (preferred when present, as on the few-shot imaging learners). It is kept outside this module's
    parameters: it is not trained, not adapted by MAML, and not saved with the fusion model (pass it again
    when loading). An ``nn.Module`` is switched to eval mode; another object must already be in it.
    """

    def __init__(self, backbone: Any, shape: Sequence[int], dim: int) -> None:
        super().__init__()
        embed = getattr(backbone, "embed", None) or backbone
        if not callable(embed):
            raise TypeError(f"an image encoder must be an nn.Module or have embed(images), got {type(backbone)}")
        if isinstance(backbone, nn.Module):
            backbone.eval()
        self._embed = (embed,)  # a tuple: not registered as a submodule
        with torch.no_grad():
            out = embed(torch.zeros(2, *shape))
        if not isinstance(out, Tensor) or out.ndim != 2 or len(out) != 2:
            raise ValueError(f"the image encoder must return an (N, D) tensor; got {getattr(out, 'shape', out)!r}")
        self.embedding_dim = int(out.shape[1])
        self.proj = nn.Linear(self.embedding_dim, dim)

    def fit_scaling(self, x: np.ndarray) -> None:
        """Nothing to scale (the backbone expects its own input normalisation)."""

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            z = self._embed[0](x).detach()
        return self.proj(z)


def build_encoder(modality: Modality, dim: int, hidden: Sequence[int], image_encoder: Any = None) -> nn.Module:
    """The encoder of ``modality`` (an image modality needs its ``image_encoder``)."""
    if modality.kind == "tabular":
        return TabularEncoder(len(modality.features), dim, hidden)
    if modality.kind == "genotype":
        return GenotypeEncoder([len(c) for c in modality.categories], dim, hidden)
    if modality.kind == "series":
        return SeriesEncoder(len(modality.features), dim, hidden=hidden[0] if hidden else 32)
    if image_encoder is None:
        raise ValueError(f"image modality {modality.name!r} needs an image encoder: pass "
                         f"image_encoders={{{modality.name!r}: learner}} (any nn.Module or object with embed())")
    return ImageEncoder(image_encoder, modality.shape, dim)

"""The fusion network: per-modality encoders, one fusion layer with an explicit modality mask, and a head.

``FusionNet`` takes one flat tensor per patient (:meth:`FusionNet.pack`: each modality's features, then
the 0/1 mask of the modalities), so it is an ordinary ``nn.Module`` that MAML's functional engine can
adapt (its prediction head is the parameters named ``head.*``) and that a metric learner can embed
(:meth:`FusionNet.embed`). The fusion layer (``fusion=``) is one of:

- ``"late"``: a prediction head per modality; the prediction is their average over the modalities the
  patient has, with learned modality weights (decision-level fusion);
- ``"gated"``: feature-wise gates computed from all present embeddings and the mask, normalised over the
  present modalities (a gated multimodal unit);
- ``"attention"``: one attention weight per present modality from a learned query (additive attention
  with a learned embedding per modality).

A missing modality never reaches the fused representation: its weight is exactly 0. Each layer also
returns the per-modality weights, which say how much each modality contributed for each patient.

``baseline="modality.feature"`` (regression) names an input that is itself a prediction (the last HbA1c
before the one predicted, say): where the patient has it, the network's output is a learned correction to
it, as a persistence forecast with a correction; elsewhere it is the prediction itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medmeta.fusion.encoders import build_encoder
from medmeta.fusion.modalities import Modality, Multimodal
from medmeta.learners.networks import mlp

FUSIONS = ("late", "gated", "attention")
TORCH_TRANSFORMS = {None: lambda t: t, "sqrt": torch.sqrt, "log": torch.log}


def masked_softmax(scores: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax over ``dim`` among entries with ``mask`` 1; exactly 0 elsewhere (all 0 when nothing is present)."""
    scores = torch.where(mask > 0, scores, torch.full_like(scores, -1e9))
    weights = torch.softmax(scores, dim=dim) * mask
    return weights / weights.sum(dim, keepdim=True).clamp(min=1e-12)


class LateFusion(nn.Module):
    """Learned modality weights, renormalised over the modalities present."""

    def __init__(self, n_modalities: int, dim: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_modalities))

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        weights = masked_softmax(self.logits.expand_as(mask), mask, dim=-1)
        return (weights[..., None] * h).sum(-2), weights


class GatedFusion(nn.Module):
    """Feature-wise gates over modalities from all (masked) embeddings and the mask."""

    def __init__(self, n_modalities: int, dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(n_modalities * (dim + 1), n_modalities * dim)
        self.n, self.dim = n_modalities, dim

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        context = torch.cat([(h * mask[..., None]).flatten(-2), mask], dim=-1)
        gates = masked_softmax(self.gate(context).unflatten(-1, (self.n, self.dim)), mask[..., None], dim=-2)
        return (gates * torch.tanh(h)).sum(-2), gates.mean(-1)


class AttentionFusion(nn.Module):
    """Additive attention: one weight per present modality, ``z = sum_m a_m W h_m``."""

    def __init__(self, n_modalities: int, dim: int) -> None:
        super().__init__()
        self.modality = nn.Parameter(torch.zeros(n_modalities, dim))
        self.key = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.randn(dim) / dim**0.5)
        self.value = nn.Linear(dim, dim)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        scores = torch.tanh(self.key(h + self.modality)) @ self.query
        weights = masked_softmax(scores, mask, dim=-1)
        return (weights[..., None] * self.value(h)).sum(-2), weights


_LAYERS = {"late": LateFusion, "gated": GatedFusion, "attention": AttentionFusion}


class FusionNet(nn.Module):
    """Encoders, fusion layer and head over packed multimodal inputs (see the module docstring).

    ``out_features`` is 1 for a regression, the number of classes for a classifier. ``image_encoders``
    maps each image modality's name to its (frozen) image encoder. With a ``baseline``, the buffers
    ``target_mean`` / ``target_scale`` and ``target_transform`` say how the target is scaled.
    """

    def __init__(self, modalities: Sequence[Modality], *, out_features: int = 1, dim: int = 32,
                 fusion: str = "attention", encoder_hidden: Sequence[int] = (64,), head_hidden: Sequence[int] = (),
                 image_encoders: Mapping[str, Any] | None = None, baseline: str | None = None,
                 target_transform: str | None = None) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.modalities = [Modality.from_dict(m) for m in modalities]
        names = [m.name for m in self.modalities]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"need at least one modality and unique names, got {names}")
        self.names, self.fusion_kind = names, fusion
        images = dict(image_encoders or {})
        self.encoders = nn.ModuleDict({m.name: build_encoder(m, dim, encoder_hidden, images.get(m.name))
                                       for m in self.modalities})
        self.fusion = _LAYERS[fusion](len(names), dim)
        if fusion == "late":
            self.head = nn.ModuleDict({n: mlp(dim, out_features, head_hidden) for n in names})
        else:
            self.mask_embedding = nn.Linear(len(names), dim, bias=False)  # lets the head know what is missing
            self.head = mlp(dim, out_features, head_hidden)
        self.widths = [m.width for m in self.modalities]
        self.baseline, self.target_transform = baseline, target_transform
        if baseline is not None:
            self._baseline = self._baseline_position(baseline, out_features)
            self.register_buffer("target_mean", torch.zeros(()))
            self.register_buffer("target_scale", torch.ones(()))
            for head in (self.head.values() if fusion == "late" else [self.head]):
                nn.init.zeros_(head.output.weight)  # start from the baseline itself
                nn.init.zeros_(head.output.bias)

    def _baseline_position(self, baseline: str, out_features: int) -> tuple[int, int]:
        """(modality index, column in the packed input) of a ``"modality.feature"`` baseline."""
        name, _, feature = baseline.partition(".")
        spec = next((m for m in self.modalities if m.name == name), None)
        if out_features != 1 or spec is None or spec.kind not in ("tabular", "series") or feature not in spec.features:
            raise ValueError(f"baseline {baseline!r} must name a feature of a tabular or series modality of this "
                             f"regression model (modalities: {self.names})")
        index = self.names.index(name)
        within = spec.features.index(feature)
        if spec.kind == "series":  # the most recent step of that channel
            within = within * spec.length + spec.length - 1
        return index, sum(self.widths[:index]) + within

    # -- packing ---------------------------------------------------------------------------------------
    @property
    def packed_width(self) -> int:
        return sum(self.widths) + len(self.names)

    def pack(self, x: Multimodal) -> Tensor:
        """``(N, packed_width)``: each modality's features flattened, then the mask (1 = present)."""
        parts = []
        for m in self.modalities:
            if m.name in x.data:
                array = x.data[m.name]
                if array.shape[1:] != m.input_shape:
                    raise ValueError(f"modality {m.name!r}: features of shape {array.shape[1:]}, "
                                     f"the model expects {m.input_shape}")
                parts.append(array.reshape(len(x), -1))
            else:
                parts.append(np.zeros((len(x), m.width), dtype=np.float32))
        parts.append(x.present(self.names).astype(np.float32))
        return torch.as_tensor(np.concatenate(parts, axis=1))

    def unpack(self, packed: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        inputs, start = {}, 0
        for m, width in zip(self.modalities, self.widths, strict=True):
            inputs[m.name] = packed[..., start:start + width].unflatten(-1, m.input_shape)
            start += width
        return inputs, packed[..., start:]

    # -- the network -----------------------------------------------------------------------------------
    def encode(self, packed: Tensor) -> tuple[Tensor, Tensor]:
        """Per-modality embeddings ``(N, M, dim)`` (0 where missing) and the mask ``(N, M)``."""
        inputs, mask = self.unpack(packed)
        h = torch.stack([self.encoders[n](inputs[n]) for n in self.names], dim=-2)
        return torch.where(mask[..., None] > 0, h, torch.zeros_like(h)), mask

    def fuse(self, packed: Tensor) -> tuple[Tensor, Tensor]:
        """The fused patient representation ``(N, dim)`` and each modality's weight ``(N, M)``."""
        h, mask = self.encode(packed)
        z, weights = self.fusion(h, mask)
        if self.fusion_kind != "late":
            z = z + self.mask_embedding(mask)
        return z, weights

    def embed(self, packed: Tensor) -> Tensor:
        """The fused representation (what a metric learner compares)."""
        return self.fuse(packed)[0]

    def forward(self, packed: Tensor) -> Tensor:
        if self.fusion_kind == "late":
            h, mask = self.encode(packed)
            _, weights = self.fusion(h, mask)
            outs = torch.stack([self.head[n](h[..., i, :]) for i, n in enumerate(self.names)], dim=-2)
            out = (weights[..., None] * outs).sum(-2)
        else:
            out = self.head(self.embed(packed))
        if self.baseline is None:
            return out
        index, column = self._baseline
        value = packed[..., column]
        has = (packed[..., -len(self.names) + index] > 0) & ~torch.isnan(value)
        scaled = (TORCH_TRANSFORMS[self.target_transform](value) - self.target_mean) / self.target_scale
        return out + torch.where(has, scaled, torch.zeros_like(scaled))[..., None]

    def fit_scaling(self, x: Multimodal) -> None:
        """Set each encoder's input scaling from the patients who have that modality."""
        for m in self.modalities:
            if m.name in x.data:
                rows = x.mask[m.name]
                self.encoders[m.name].fit_scaling(x.data[m.name][rows])

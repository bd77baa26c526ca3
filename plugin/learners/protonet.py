"""Prototypical Networks (Snell et al., NeurIPS 2017): classify by distance to class means."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medmeta.learners.base import FewShotLearner
from medmeta.learners.encoders import ConvEncoder


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Mean embedding of each class ``0..n_way-1``."""
    sums = torch.zeros(n_way, embeddings.shape[1], dtype=embeddings.dtype).index_add_(0, labels, embeddings)
    counts = torch.bincount(labels, minlength=n_way).clamp(min=1).unsqueeze(1)
    return sums / counts


class PrototypicalNetwork(FewShotLearner):
    """A metric learner: an encoder trained so that cases of one class lie close together.

    ``distance`` is ``"euclidean"`` (squared, as in the paper) or ``"cosine"`` (scaled by a
    learned temperature).
    """

    def __init__(self, in_channels: int = 3, hidden: int = 64, depth: int = 4, distance: str = "euclidean",
                 lr: float = 1e-3, max_episodes: int = 2000, max_seconds: float | None = None,
                 seed: int = 0) -> None:
        super().__init__(lr=lr, max_episodes=max_episodes, max_seconds=max_seconds, seed=seed)
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        self.in_channels, self.hidden, self.depth, self.distance = in_channels, hidden, depth, distance
        self.encoder = ConvEncoder(in_channels, hidden, depth)
        self.log_scale = torch.nn.Parameter(torch.tensor(2.3))  # cosine temperature, exp(2.3) ~ 10

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def scores(self, queries: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Logits of query embeddings against class centres."""
        if self.distance == "cosine":
            return self.log_scale.exp() * F.normalize(queries, dim=1) @ F.normalize(centres, dim=1).T
        return -torch.cdist(queries, centres).pow(2)

    def episode_logits(self, support_x, support_y, query_x, n_way):
        z = self.embed(torch.cat([support_x, query_x]))
        centres = prototypes(z[: len(support_x)], torch.as_tensor(support_y), n_way)
        return self.scores(z[len(support_x):], centres)

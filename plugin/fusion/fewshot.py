"""Metric few-shot classification over fused patient embeddings (Prototypical and Matching style).

A multimodal :class:`~medmeta.tasks.Task` (support and query sets are :class:`~medmeta.fusion.modalities.Multimodal`)
is classified by comparing fused embeddings: to class prototypes (mean support embedding, Snell et al. 2017,
with :func:`medmeta.learners.protonet.prototypes`) or to every support case with attention (Vinyals et al. 2016).
The encoder is a :class:`~medmeta.fusion.network.FusionNet` (meta-trainable on episodes, with modality dropout)
or a fitted :class:`~medmeta.fusion.model.FusionModel` (frozen; its :meth:`~FusionModel.transform`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmeta.fusion.modalities import Multimodal, modality_dropout
from medmeta.fusion.model import FusionModel
from medmeta.fusion.network import FusionNet
from medmeta.learners.protonet import prototypes
from medmeta.stats import Estimate, mean_ci
from medmeta.tasks import Task

METHODS = ("prototypical", "matching")


class FusedMetricClassifier(nn.Module):
    """Few-shot classifier over fused embeddings; ``method`` is ``"prototypical"`` or ``"matching"``.

    ``distance`` (prototypical): ``"euclidean"`` (squared) or ``"cosine"``; matching always uses cosine
    similarity with a learned temperature. ``meta_fit`` trains a :class:`FusionNet` encoder on episodes
    (its input scaling must be set first with ``FusionNet.fit_scaling``).
    """

    def __init__(self, encoder: FusionNet | FusionModel, *, method: str = "prototypical",
                 distance: str = "euclidean", lr: float = 1e-3, max_episodes: int = 500,
                 max_seconds: float | None = None, modality_dropout: float = 0.3, seed: int = 0) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        if isinstance(encoder, FusionNet):
            self.net: FusionNet | None = encoder
            self._model = None
        elif isinstance(encoder, FusionModel):
            self.net, self._model = None, encoder
        else:
            raise TypeError(f"encoder must be a FusionNet or a fitted FusionModel, got {type(encoder).__name__}")
        self.method, self.distance, self.lr, self.max_episodes = method, distance, lr, max_episodes
        self.max_seconds, self.modality_dropout, self.seed = max_seconds, modality_dropout, seed
        self.log_scale = nn.Parameter(torch.tensor(2.3))  # cosine temperature, exp(2.3) ~ 10
        self.history_: dict[str, Any] = {}

    @property
    def names(self) -> list[str]:
        return self.net.names if self.net is not None else self._model.names

    def embed(self, x: Multimodal, *, rng: np.random.Generator | None = None) -> Tensor:
        """Fused embeddings ``(N, D)``; with ``rng`` (training), modalities are dropped at random."""
        if self.net is None:
            return torch.as_tensor(self._model.transform(x))
        packed = self.net.pack(x)
        if rng is not None:
            mask = modality_dropout(x.present(self.names), self.modality_dropout, rng)
            packed[:, -len(self.names):] = torch.as_tensor(mask)
        return self.net.embed(packed)

    def logits(self, zs: Tensor, ys: Tensor, zq: Tensor, n_way: int) -> Tensor:
        """Class scores ``(n_query, n_way)`` of query embeddings given labelled support embeddings."""
        if self.method == "matching":
            attention = (self.log_scale.exp() * F.normalize(zq, dim=1) @ F.normalize(zs, dim=1).T).softmax(1)
            return torch.log(attention @ F.one_hot(ys, n_way).to(attention.dtype) + 1e-8)
        centres = prototypes(zs, ys, n_way)
        if self.distance == "cosine":
            return self.log_scale.exp() * F.normalize(zq, dim=1) @ F.normalize(centres, dim=1).T
        return -torch.cdist(zq, centres).pow(2)

    def episode_logits(self, task: Task, rng: np.random.Generator | None = None) -> Tensor:
        ys = torch.as_tensor(np.asarray(task.support_y), dtype=torch.long)
        n_way = int(ys.max()) + 1
        both = Multimodal.concat([task.support_x, task.query_x])
        z = self.embed(both, rng=rng)
        return self.logits(z[: len(ys)], ys, z[len(ys):], n_way)

    def meta_fit(self, tasks: Iterable[Task]) -> FusedMetricClassifier:
        """Train the fusion encoder on episodes (cross-entropy of the query labels) until a budget is spent."""
        if self.net is None:
            raise ValueError("meta_fit trains a FusionNet encoder; a FusionModel encoder is used as it is")
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        optimiser = torch.optim.Adam(self.parameters(), lr=self.lr)
        losses, start = [], time.monotonic()
        self.train()
        for episode, task in enumerate(tasks, start=1):
            loss = F.cross_entropy(self.episode_logits(task, rng), torch.as_tensor(np.asarray(task.query_y)).long())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            if episode >= self.max_episodes or (self.max_seconds and time.monotonic() - start >= self.max_seconds):
                break
        self.eval()
        self.history_ = {"episodes": len(losses), "seconds": time.monotonic() - start, "loss": losses}
        return self

    @torch.no_grad()
    def predict_proba(self, support_x: Multimodal, support_y: Any, query_x: Multimodal) -> np.ndarray:
        """Class probabilities ``(n_query, n_way)``; class ``j`` is support label ``j``."""
        self.eval()
        return self.episode_logits(Task(support_x, support_y, query_x, np.zeros(len(query_x)))).softmax(1).numpy()

    def predict(self, support_x: Multimodal, support_y: Any, query_x: Multimodal) -> np.ndarray:
        return self.predict_proba(support_x, support_y, query_x).argmax(1)

    def score(self, tasks: Iterable[Task]) -> Estimate:
        """Mean query accuracy over episodes, with its 95% confidence interval."""
        return mean_ci([float(np.mean(self.predict(t.support_x, t.support_y, t.query_x) == np.asarray(t.query_y)))
                        for t in tasks])

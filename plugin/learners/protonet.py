"""Prototypical Networks (Snell et al., NeurIPS 2017): classify by distance to class means."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medmeta.learners.base import FewShotLearner
from medmeta.learners.encoders import make_encoder
from medmeta.tasks import Task

LOSSES = ("ce", "triplet", "contrastive")


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Mean embedding of each class ``0..n_way-1``."""
    members = F.one_hot(labels, n_way).T.to(embeddings.dtype)  # (n_way, n)
    return members @ embeddings / members.sum(1, keepdim=True).clamp(min=1)


def triplet_loss(z: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al., 2017) on L2-normalised embeddings.

    Each item is an anchor; its farthest same-class item should be closer than its nearest
    other-class item by ``margin``.
    """
    d = torch.cdist(F.normalize(z, dim=1), F.normalize(z, dim=1))
    same = y.unsqueeze(0) == y.unsqueeze(1)
    hardest_positive = d.masked_fill(~same, 0).amax(1)
    hardest_negative = d.masked_fill(same, float("inf")).amin(1)
    return F.relu(hardest_positive - hardest_negative + margin).mean()


def contrastive_loss(z: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Pairwise contrastive loss (Hadsell et al., 2006) on L2-normalised embeddings.

    Same-class pairs are pulled together; other-class pairs pushed at least ``margin`` apart.
    """
    d = torch.cdist(F.normalize(z, dim=1), F.normalize(z, dim=1))
    same = (y.unsqueeze(0) == y.unsqueeze(1)).float()
    pairs = 1 - torch.eye(len(y))
    loss = same * d.pow(2) + (1 - same) * F.relu(margin - d).pow(2)
    return (loss * pairs).sum() / pairs.sum()


class PrototypicalNetwork(FewShotLearner):
    """A metric learner: an encoder trained so that cases of one class lie close together.

    - ``backbone``: the encoder, ``"conv4"`` or ``"resnet"`` (MONAI's ResNet), with ``hidden``
      features and ``depth`` stages.
    - ``distance``: ``"euclidean"`` (squared, as in the paper) or ``"cosine"`` (scaled by a
      learned temperature).
    - ``loss``: ``"ce"`` (cross-entropy over distances to the prototypes, as in the paper),
      ``"triplet"`` (batch-hard) or ``"contrastive"`` (pairwise) on the episode's embeddings,
      with ``margin``.
    - ``n_classes``: size of the remembered support (prototypes); :meth:`remember` sets it.

    Training, validation and deployment settings are those of :class:`FewShotLearner`.
    """

    support_buffers = ("prototypes",)

    def __init__(self, in_channels: int = 3, hidden: int = 64, depth: int = 4, distance: str = "euclidean",
                 lr: float = 1e-3, max_episodes: int = 2000, max_seconds: float | None = None,
                 seed: int = 0, *, backbone: str = "conv4", loss: str = "ce", margin: float = 0.5,
                 n_classes: int = 0, image_size: int = 28, n_way: int = 5, k_shot: int = 5, n_query: int = 15,
                 augment: bool = False, pretrain_epochs: float = 0.0, pretrain_lr: float = 2e-3,
                 rotation_weight: float = 0.0, validate_every: int = 500) -> None:
        super().__init__(in_channels=in_channels, image_size=image_size, lr=lr, max_episodes=max_episodes,
                         max_seconds=max_seconds, seed=seed, n_way=n_way, k_shot=k_shot, n_query=n_query,
                         augment=augment, pretrain_epochs=pretrain_epochs, pretrain_lr=pretrain_lr,
                         rotation_weight=rotation_weight, validate_every=validate_every)
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.hidden, self.depth, self.distance, self.backbone = hidden, depth, distance, backbone
        self.loss, self.margin, self.n_classes = loss, margin, n_classes
        self.encoder = make_encoder(backbone, in_channels, hidden, depth)
        self.log_scale = torch.nn.Parameter(torch.tensor(2.3))  # cosine temperature, exp(2.3) ~ 10
        self.register_buffer("prototypes", torch.zeros(n_classes, hidden))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def scores(self, queries: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Logits of query embeddings against class centres."""
        if self.distance == "cosine":
            return self.log_scale.exp() * F.normalize(queries, dim=1) @ F.normalize(centres, dim=1).T
        return -torch.cdist(queries, centres).pow(2)

    def support_state(self, zs: torch.Tensor, ys: torch.Tensor, n_way: int) -> dict[str, torch.Tensor]:
        return {"prototypes": prototypes(zs, ys, n_way)}

    def logits(self, zq: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.scores(zq, state["prototypes"])

    def support(self) -> dict[str, torch.Tensor]:
        return {"prototypes": self.prototypes}

    def episode_loss(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        if self.loss == "ce":
            return super().episode_loss(task)
        sy, qy = torch.as_tensor(task.support_y), torch.as_tensor(task.query_y)
        z = self.embed(torch.cat([task.support_x, task.query_x]))
        zs, zq = z[: len(sy)], z[len(sy):]
        logits = self.logits(zq, self.support_state(zs, sy, int(sy.max()) + 1))
        metric_loss = triplet_loss if self.loss == "triplet" else contrastive_loss
        return metric_loss(z, torch.cat([sy, qy]), self.margin), logits

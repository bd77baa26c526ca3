"""Matching Networks (Vinyals et al., NeurIPS 2016): attention over a stored support set."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medmeta.learners.base import FewShotLearner
from medmeta.learners.encoders import make_encoder
from medmeta.tasks import Task


class MatchingNetwork(FewShotLearner):
    """A memory learner: a query's class distribution is attention over the labelled support cases.

    With full-context embeddings (``fce=True``) each support case is embedded in the context
    of the whole support set (a bidirectional LSTM over it), and each query by ``fce_steps``
    steps of an LSTM that attends over the support (the paper's ``g`` and ``f``); attention is
    a softmax over cosine similarities scaled by a learned temperature. Two simplifications,
    as in common implementations: the attention LSTM's hidden state is ``h + r`` (sum, not
    concatenation), and embeddings are L2-normalised before the context modules.

    - ``backbone``, ``hidden``, ``depth``: the encoder (see :func:`~medmeta.learners.encoders.make_encoder`).
    - ``n_classes``, ``n_support``: size of the remembered support; :meth:`remember` sets them.
    """

    support_buffers = ("support_keys", "support_onehot")

    def __init__(self, in_channels: int = 3, hidden: int = 64, depth: int = 4, fce: bool = True,
                 fce_steps: int = 4, lr: float = 1e-3, max_episodes: int = 2000, max_seconds: float | None = None,
                 seed: int = 0, *, backbone: str = "conv4", n_classes: int = 0, n_support: int = 0,
                 image_size: int = 28, n_way: int = 5, k_shot: int = 5, n_query: int = 15, augment: bool = False,
                 pretrain_epochs: float = 0.0, pretrain_lr: float = 2e-3, rotation_weight: float = 0.0,
                 validate_every: int = 500) -> None:
        super().__init__(in_channels=in_channels, image_size=image_size, lr=lr, max_episodes=max_episodes,
                         max_seconds=max_seconds, seed=seed, n_way=n_way, k_shot=k_shot, n_query=n_query,
                         augment=augment, pretrain_epochs=pretrain_epochs, pretrain_lr=pretrain_lr,
                         rotation_weight=rotation_weight, validate_every=validate_every)
        self.hidden, self.depth, self.backbone, self.fce, self.fce_steps = hidden, depth, backbone, fce, fce_steps
        self.n_classes, self.n_support = n_classes, n_support
        self.encoder = make_encoder(backbone, in_channels, hidden, depth)
        self.support_lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.query_lstm = nn.LSTMCell(hidden, hidden)
        self.log_scale = nn.Parameter(torch.tensor(2.3))  # attention temperature, exp(2.3) ~ 10
        self.register_buffer("support_keys", torch.zeros(n_support, hidden))
        self.register_buffer("support_onehot", torch.zeros(n_support, n_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def context(self, zs: torch.Tensor) -> torch.Tensor:
        """``g``: support embeddings in the context of the whole support set."""
        zs = F.normalize(zs, dim=1)
        if not self.fce:
            return zs
        out, _ = self.support_lstm(zs.unsqueeze(0))
        return zs + out[0, :, : self.hidden] + out[0, :, self.hidden:]

    def attend(self, zq: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Attention ``(n_query, n_support)`` of each query over the support keys (``f``, then softmax)."""
        zq = F.normalize(zq, dim=1)
        h = zq
        if self.fce:
            c = torch.zeros_like(zq)
            for _ in range(self.fce_steps):
                read = torch.softmax(h @ keys.T, dim=1) @ keys
                h, c = self.query_lstm(zq, (h + read, c))
                h = h + zq
        sims = F.normalize(h, dim=1) @ F.normalize(keys, dim=1).T
        return torch.softmax(self.log_scale.exp() * sims, dim=1)

    def support_state(self, zs: torch.Tensor, ys: torch.Tensor, n_way: int) -> dict[str, torch.Tensor]:
        return {"support_keys": self.context(zs), "support_onehot": F.one_hot(ys, n_way).to(zs.dtype)}

    def logits(self, zq: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Log class probabilities: the attention-weighted sum of the support labels."""
        probabilities = self.attend(zq, state["support_keys"]) @ state["support_onehot"]
        return torch.log(probabilities.clamp_min(1e-8))

    def support(self) -> dict[str, torch.Tensor]:
        return {"support_keys": self.support_keys, "support_onehot": self.support_onehot}

    def episode_loss(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        # The support order is shuffled in training so that the context LSTM cannot learn from positions.
        order = torch.randperm(len(task.support_y), generator=self._generator)
        shuffled = Task(task.support_x[order], torch.as_tensor(task.support_y)[order], task.query_x,
                        task.query_y, task.metadata)
        return super().episode_loss(shuffled)

    def _record_support_shape(self, n_classes: int, n_support: int) -> None:
        self.n_classes, self.n_support = n_classes, n_support

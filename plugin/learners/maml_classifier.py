"""MAML for images (Finn et al. 2017), first order by default: the optimisation-based family of learners.

Built on the ``torch.func`` engine of :mod:`medmeta.learners.maml` (:func:`inner_adapt`,
:func:`weighted_loss`): per episode, a Conv-4 network with a zero-initialised ``n_way``-output
head takes ``inner_steps`` gradient steps on the support set; the query loss after them trains
the initial weights. Instance norm (no running statistics) keeps adaptation per task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medmeta.learners.base import FewShotLearner
from medmeta.learners.encoders import ConvEncoder
from medmeta.learners.maml import inner_adapt, weighted_loss
from medmeta.tasks import Task


def _sliced_cross_entropy(n_way: int):
    """Cross-entropy over the first ``n_way`` outputs (a 2-way task uses two rows of a 5-way head)."""
    return lambda logits, y: F.cross_entropy(logits[:, :n_way], y.long(), reduction="none")


class MAMLClassifier(FewShotLearner):
    """Model-agnostic meta-learning of an image classifier's initial weights.

    - ``first_order``: first-order MAML (no gradient through the inner loop; cheaper), or full MAML.
    - ``inner_steps``, ``inner_lr``: the support-set adaptation (``test_inner_steps`` at prediction).
    - ``hidden``, ``depth``: the Conv-4 encoder (instance norm); ``n_way``: outputs of the head
      (episodes with fewer classes use the first ones).

    Predictions adapt a copy of the weights to each support set, so a memory of cases cannot be
    folded into buffers: :meth:`remember` is not available (no bundle is shipped for this learner).
    """

    embeds_independently = False

    def __init__(self, in_channels: int = 3, hidden: int = 64, depth: int = 4, first_order: bool = True,
                 inner_steps: int = 5, inner_lr: float = 0.1, test_inner_steps: int = 10, lr: float = 1e-3,
                 max_episodes: int = 2000, max_seconds: float | None = None, seed: int = 0, *,
                 image_size: int = 28, n_way: int = 5, k_shot: int = 5, n_query: int = 15, augment: bool = False,
                 validate_every: int = 500) -> None:
        super().__init__(in_channels=in_channels, image_size=image_size, lr=lr, max_episodes=max_episodes,
                         max_seconds=max_seconds, seed=seed, n_way=n_way, k_shot=k_shot, n_query=n_query,
                         augment=augment, validate_every=validate_every)
        self.hidden, self.depth, self.first_order = hidden, depth, first_order
        self.inner_steps, self.inner_lr, self.test_inner_steps = inner_steps, inner_lr, test_inner_steps
        self.encoder = ConvEncoder(in_channels, hidden, depth, norm="INSTANCE")
        self.head = nn.Linear(hidden, n_way)
        nn.init.zeros_(self.head.weight)  # every class starts equal: the labels' order does not matter
        nn.init.zeros_(self.head.bias)

    @property
    def net(self) -> nn.Sequential:
        """Encoder then head, as one network for :mod:`torch.func` (the same parameters, not copies)."""
        return nn.Sequential(self.encoder, self.head)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def _adapted(self, support_x: torch.Tensor, support_y: torch.Tensor, n_way: int, steps: int, *,
                 first_order: bool) -> dict[str, torch.Tensor]:
        net = self.net
        params = dict(net.named_parameters())
        lrs = {name: torch.tensor(self.inner_lr) for name in params}
        return inner_adapt(net, params, lrs, support_x, support_y, loss=_sliced_cross_entropy(n_way),
                           steps=steps, first_order=first_order)

    def episode_logits(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                       n_way: int) -> torch.Tensor:
        fast = self._adapted(support_x, torch.as_tensor(support_y), n_way, self.test_inner_steps, first_order=True)
        with torch.no_grad():
            return torch.func.functional_call(self.net, fast, (query_x,))[:, :n_way]

    def episode_loss(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        sy, qy = torch.as_tensor(task.support_y), torch.as_tensor(task.query_y)
        n_way = int(sy.max()) + 1
        fast = self._adapted(task.support_x, sy, n_way, self.inner_steps, first_order=self.first_order)
        loss = weighted_loss(self.net, fast, task.query_x, qy, torch.ones(len(qy)), _sliced_cross_entropy(n_way))
        with torch.no_grad():
            logits = torch.func.functional_call(self.net, fast, (task.query_x,))[:, :n_way]
        return loss, logits

    def remember(self, support_x, support_y, classes=None):
        raise NotImplementedError("MAMLClassifier adapts its weights per task; it has no deployable support state")

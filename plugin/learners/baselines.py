"""Transfer-learning baselines that every few-shot learner must beat (Chen et al., ICLR 2019; Dhillon et al., 2020).

Both pre-train the encoder as a plain classifier over all the training classes
(:meth:`FewShotLearner.pretrain`) and never train on episodes. At test time
:class:`ClassifierBaseline` fits a new classifier on the frozen features of the support set
(logistic regression, as in "A Closer Look at Few-shot Classification", or the nearest class
centroid), and :class:`FineTuneBaseline` fine-tunes the whole network on the support set.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from medmeta.imaging import augment
from medmeta.learners.base import FewShotLearner
from medmeta.learners.encoders import make_encoder
from medmeta.learners.protonet import prototypes

HEADS = ("logreg", "centroid")


class ClassifierBaseline(FewShotLearner):
    """The "Baseline" of Chen et al. (2019): a classifier's frozen features, a new classifier per task.

    ``head="logreg"`` fits scikit-learn's logistic regression (``C``) on the L2-normalised support
    features; ``head="centroid"`` assigns the nearest class mean by cosine similarity.
    """

    support_buffers = ("weight", "bias")

    def __init__(self, in_channels: int = 3, hidden: int = 64, depth: int = 4, head: str = "logreg", C: float = 1.0,
                 seed: int = 0, *, backbone: str = "conv4", n_classes: int = 0, image_size: int = 28,
                 augment: bool = False, pretrain_epochs: float = 5.0, pretrain_lr: float = 2e-3) -> None:
        super().__init__(in_channels=in_channels, image_size=image_size, max_episodes=0, seed=seed,
                         augment=augment, pretrain_epochs=pretrain_epochs, pretrain_lr=pretrain_lr)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.hidden, self.depth, self.head, self.C, self.backbone = hidden, depth, head, C, backbone
        self.n_classes = n_classes
        self.encoder = make_encoder(backbone, in_channels, hidden, depth)
        self.register_buffer("weight", torch.zeros(n_classes, hidden))
        self.register_buffer("bias", torch.zeros(n_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def support_state(self, zs: torch.Tensor, ys: torch.Tensor, n_way: int) -> dict[str, torch.Tensor]:
        zs = F.normalize(zs.detach(), dim=1)
        if self.head == "centroid":
            return {"weight": 10 * F.normalize(prototypes(zs, ys, n_way), dim=1), "bias": torch.zeros(n_way)}
        model = LogisticRegression(C=self.C, max_iter=1000).fit(zs.numpy(), ys.numpy())
        weight, bias = torch.as_tensor(model.coef_, dtype=zs.dtype), torch.as_tensor(model.intercept_, dtype=zs.dtype)
        if n_way == 2:  # scikit-learn keeps one row for two classes: the logit of class 1
            weight, bias = torch.cat([-weight / 2, weight / 2]), torch.cat([-bias / 2, bias / 2])
        return {"weight": weight, "bias": bias}

    def logits(self, zq: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(zq, dim=1) @ state["weight"].T + state["bias"]

    def support(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight, "bias": self.bias}


class FineTuneBaseline(ClassifierBaseline):
    """Fine-tuning (after Dhillon et al., 2020, inductive): per task, a new cosine classifier initialised
    at the support centroids and the encoder's last block (``finetune="top"``) or all of it
    (``finetune="all"``) are trained on the support set for ``steps`` Adam steps (learning rate
    ``finetune_lr``), then predict. Batch-norm statistics stay those of pre-training.
    """

    embeds_independently = False

    def __init__(self, in_channels: int = 3, hidden: int = 64, depth: int = 4, steps: int = 25,
                 finetune_lr: float = 1e-3, finetune: str = "top", seed: int = 0, *, backbone: str = "conv4",
                 image_size: int = 28, augment: bool = False, pretrain_epochs: float = 5.0,
                 pretrain_lr: float = 2e-3) -> None:
        super().__init__(in_channels, hidden, depth, "centroid", 1.0, seed, backbone=backbone,
                         image_size=image_size, augment=augment, pretrain_epochs=pretrain_epochs,
                         pretrain_lr=pretrain_lr)
        if finetune not in ("top", "all"):
            raise ValueError(f"finetune must be 'top' or 'all', got {finetune!r}")
        self.steps, self.finetune_lr, self.finetune = steps, finetune_lr, finetune

    def episode_logits(self, support_x, support_y, query_x, n_way):
        ys = torch.as_tensor(support_y)
        self.eval()  # batch-norm statistics stay those of pre-training
        if self.finetune == "top":  # the frozen trunk runs once; only the last block is trained
            trunk, top = self.encoder.split()
            with torch.no_grad():
                support_x, query_x = trunk(support_x), trunk(query_x)
            trainable = copy.deepcopy(top)
        else:
            trainable = copy.deepcopy(self.encoder)
        with torch.no_grad():
            centres = prototypes(F.normalize(trainable(support_x), dim=1), ys, n_way)
        head = torch.nn.Parameter(F.normalize(centres, dim=1))
        optimiser = torch.optim.Adam([*trainable.parameters(), head], lr=self.finetune_lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                x = augment(support_x, self._generator) if self.augment and self.finetune == "all" else support_x
                loss = F.cross_entropy(10 * F.normalize(trainable(x), dim=1) @ F.normalize(head, dim=1).T, ys)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        with torch.no_grad():
            return 10 * F.normalize(trainable(query_x), dim=1) @ F.normalize(head, dim=1).T

    def remember(self, support_x, support_y, classes=None):
        raise NotImplementedError("FineTuneBaseline adapts per task; it has no deployable support state")

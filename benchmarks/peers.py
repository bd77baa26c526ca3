"""The peer libraries (learn2learn, easyfsl) wrapped in medmeta's evaluation protocol, for benchmarks only.

Install them with ``bash benchmarks/setup_peers.sh`` (into ``benchmarks/.peers``; never a medmeta
dependency). Both import torchvision at import time, which has no CPU build here; nothing on
their few-shot path with our own backbone uses it, so :func:`medmeta.compat.torchvision_placeholder`
lets them import. Each wrapper trains the peer's own
algorithm with its own code on our episodes and answers ``predict_proba(support_x, support_y,
query_x)`` like a medmeta learner, so every method is scored on the same episodes.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medmeta.compat import torchvision_placeholder
from medmeta.learners.encoders import ConvEncoder
from medmeta.tasks import Task

PEERS = Path(__file__).resolve().parent / ".peers"


def import_peers() -> tuple[types.ModuleType, types.ModuleType]:
    """``(learn2learn, easyfsl.methods)`` from ``benchmarks/.peers``."""
    if not PEERS.is_dir():
        raise RuntimeError(f"{PEERS} is missing: run `bash benchmarks/setup_peers.sh` first")
    if str(PEERS) not in sys.path:
        sys.path.insert(0, str(PEERS))
    torchvision_placeholder()
    import easyfsl.methods
    import learn2learn

    return learn2learn, easyfsl.methods


class _EpisodicPeer:
    """Training loop shared by the wrappers: Adam on episodes for ``max_seconds`` or ``max_episodes``."""

    embeds_independently = False
    in_channels, image_size = 3, 28

    def __init__(self, max_seconds: float = 300, max_episodes: int = 10**9, lr: float = 1e-3, seed: int = 0):
        self.max_seconds, self.max_episodes, self.lr, self.seed = max_seconds, max_episodes, lr, seed
        self.history_: dict = {}
        torch.manual_seed(seed)

    def fit_episodes(self, tasks: Iterable[Task]):
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimiser = torch.optim.Adam(params, lr=self.lr)
        start, n = time.monotonic(), 0
        self.module.train()
        for n, task in enumerate(tasks, start=1):
            loss = self.episode_loss(task)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if n >= self.max_episodes or time.monotonic() - start >= self.max_seconds:
                break
        self.module.eval()
        self.history_ = {"episodes": n, "seconds": time.monotonic() - start}
        return self


class EasyFSLMethod(_EpisodicPeer):
    """easyfsl's ``PrototypicalNetworks`` or ``MatchingNetworks`` on a Conv-4 backbone (64 filters)."""

    def __init__(self, method: str = "PrototypicalNetworks", **kwargs):
        super().__init__(**kwargs)
        _, methods = import_peers()
        backbone = ConvEncoder(3, 64, 4)
        cls = getattr(methods, method)
        self.name = f"easyfsl {method}"
        self.module = cls(backbone, feature_dimension=64) if method == "MatchingNetworks" else cls(backbone)

    def episode_loss(self, task: Task) -> torch.Tensor:
        self.module.process_support_set(task.support_x, torch.as_tensor(task.support_y))
        scores = self.module(task.query_x)
        query_y = torch.as_tensor(task.query_y)
        if type(self.module).__name__ == "MatchingNetworks":  # its scores are log-probabilities
            return F.nll_loss(scores, query_y)
        return F.cross_entropy(scores, query_y)

    @torch.no_grad()
    def predict_proba(self, support_x, support_y, query_x) -> np.ndarray:
        self.module.eval()
        self.module.process_support_set(support_x, torch.as_tensor(support_y))
        return self.module(query_x).softmax(1).numpy()


class L2LMAML(_EpisodicPeer):
    """learn2learn's ``MAML`` on its own ``CNN4``, 64 filters (second order unless ``first_order``)."""

    def __init__(self, ways: int = 5, adaptation_steps: int = 1, test_adaptation_steps: int = 3,
                 fast_lr: float = 0.4, first_order: bool = False, **kwargs):
        super().__init__(**kwargs)
        l2l, _ = import_peers()
        self.ways, self.steps, self.test_steps = ways, adaptation_steps, test_adaptation_steps
        self.name = "learn2learn MAML" + (" (first order)" if first_order else "")
        self.model = l2l.vision.models.CNN4(output_size=ways, hidden_size=64, layers=4, channels=3,
                                            embedding_size=64)  # 28x28 inputs: 1x1x64 after four poolings
        self.module = l2l.algorithms.MAML(self.model, lr=fast_lr, first_order=first_order)

    def _adapt(self, support_x, support_y, steps):
        learner = self.module.clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(support_x), torch.as_tensor(support_y)))
        return learner

    def episode_loss(self, task: Task) -> torch.Tensor:
        learner = self._adapt(task.support_x, task.support_y, self.steps)
        return F.cross_entropy(learner(task.query_x), torch.as_tensor(task.query_y))

    def predict_proba(self, support_x, support_y, query_x) -> np.ndarray:
        n_way = int(np.max(np.asarray(support_y))) + 1
        self.module.train()  # MAML adapts with batch statistics of the task, as it was trained
        learner = self._adapt(support_x, support_y, self.test_steps)
        with torch.no_grad():
            return learner(query_x)[:, :n_way].softmax(1).numpy()


class L2LProto(_EpisodicPeer):
    """learn2learn's ``PrototypicalClassifier`` (its nearest-prototype head) on a Conv-4 backbone."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.l2l, _ = import_peers()
        self.name = "learn2learn PrototypicalClassifier"
        self.module = nn.Sequential(ConvEncoder(3, 64, 4))

    def _logits(self, support_x, support_y, query_x):
        z = self.module(torch.cat([support_x, query_x]))
        head = self.l2l.nn.PrototypicalClassifier(z[: len(support_x)], torch.as_tensor(support_y))
        return head(z[len(support_x):])

    def episode_loss(self, task: Task) -> torch.Tensor:
        return F.cross_entropy(self._logits(task.support_x, task.support_y, task.query_x),
                               torch.as_tensor(task.query_y))

    @torch.no_grad()
    def predict_proba(self, support_x, support_y, query_x) -> np.ndarray:
        self.module.eval()
        return self._logits(support_x, support_y, query_x).softmax(1).numpy()

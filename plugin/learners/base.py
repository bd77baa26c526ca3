"""What every few-shot image learner shares: settings, episodic meta-training, prediction, saving."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

import medmeta
from medmeta.progress import progress
from medmeta.stats import Estimate, mean_ci
from medmeta.tasks import Task


class FewShotLearner(nn.Module):
    """Base class: subclasses set up their modules in ``__init__`` and define :meth:`episode_logits`.

    Following scikit-learn, every ``__init__`` argument is stored under its own name, so
    :meth:`get_params` can rebuild the learner (and a MONAI bundle config can construct it).
    """

    def __init__(self, *, lr: float = 1e-3, max_episodes: int = 2000, max_seconds: float | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.lr, self.max_episodes, self.max_seconds, self.seed = lr, max_episodes, max_seconds, seed
        self.history_: dict[str, Any] = {}
        torch.manual_seed(seed)

    # -- what subclasses define -------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` -> embeddings ``(N, D)``."""
        raise NotImplementedError

    def episode_logits(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                       n_way: int) -> torch.Tensor:
        """Class scores ``(n_query, n_way)`` for the query images given a labelled support set."""
        raise NotImplementedError

    def episode_loss(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss of one episode and its query logits (cross-entropy unless overridden)."""
        sy = torch.as_tensor(task.support_y)
        logits = self.episode_logits(task.support_x, sy, task.query_x, int(sy.max()) + 1)
        return F.cross_entropy(logits, torch.as_tensor(task.query_y)), logits

    # -- the shared surface -------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def meta_fit(self, tasks: Iterable[Task], *, show_progress: bool = True) -> FewShotLearner:
        """Meta-train on episodes until ``max_episodes`` or ``max_seconds``, whichever comes first."""
        optimiser = torch.optim.Adam(self.parameters(), lr=self.lr)
        budget = self.max_seconds
        total = budget if budget else float(self.max_episodes)
        losses, accuracies = [], []
        start = time.monotonic()
        self.train()
        with progress(f"Meta-training {type(self).__name__}", total, force_terminal=None if show_progress
                      else False) as advance:
            for episode, task in enumerate(tasks, start=1):
                loss, logits = self.episode_loss(task)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
                accuracies.append((logits.argmax(1) == torch.as_tensor(task.query_y)).float().mean().item())
                elapsed = time.monotonic() - start
                recent = slice(-50, None)
                advance(elapsed if budget else episode,
                        f"episode {episode} loss {np.mean(losses[recent]):.3f} acc {np.mean(accuracies[recent]):.2f}")
                if episode >= self.max_episodes or (budget and elapsed >= budget):
                    break
        self.eval()
        self.history_ = {"episodes": len(losses), "seconds": time.monotonic() - start,
                         "loss": losses, "train_accuracy": accuracies}
        return self

    @torch.no_grad()
    def predict_proba(self, support_x: torch.Tensor, support_y: np.ndarray | torch.Tensor,
                      query_x: torch.Tensor) -> np.ndarray:
        """Class probabilities ``(n_query, n_way)``; class ``j`` is support label ``j``."""
        self.eval()
        sy = torch.as_tensor(support_y)
        return self.episode_logits(support_x, sy, query_x, int(sy.max()) + 1).softmax(1).numpy()

    def predict(self, support_x: torch.Tensor, support_y: np.ndarray | torch.Tensor,
                query_x: torch.Tensor) -> np.ndarray:
        return self.predict_proba(support_x, support_y, query_x).argmax(1)

    def score(self, tasks: Iterable[Task]) -> Estimate:
        """Mean query accuracy over episodes, with its 95% confidence interval."""
        accuracy = [float(np.mean(self.predict(t.support_x, t.support_y, t.query_x) == np.asarray(t.query_y)))
                    for t in tasks]
        return mean_ci(accuracy)

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` (class, settings, training summary) and ``model.safetensors``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        summary = {k: v for k, v in self.history_.items() if not isinstance(v, list)}
        config = {"learner": type(self).__name__, "params": self.get_params(),
                  "medmeta_version": medmeta.__version__, "training": summary}
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")
        (directory / "config.json").write_text(json.dumps(config, indent=2))
        return directory


def load_learner(directory: str | Path) -> FewShotLearner:
    """Rebuild a learner saved with :meth:`FewShotLearner.save` (safetensors: no code is loaded)."""
    from medmeta.learners import LEARNERS

    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    cls = LEARNERS.get(config.get("learner"))
    if cls is None:
        raise ValueError(f"{directory / 'config.json'}: unknown learner {config.get('learner')!r}; "
                         f"known: {sorted(LEARNERS)}")
    learner = cls(**config["params"])
    learner.load_state_dict(load_file(directory / "model.safetensors"))
    return learner.eval()

"""What every few-shot image learner shares: settings, training, prediction, a deployable support set, saving."""

from __future__ import annotations

import copy
import inspect
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

import medmeta
from medmeta.imaging import augment
from medmeta.progress import progress
from medmeta.stats import Estimate, mean_ci
from medmeta.tasks import EpisodeSampler, Task

#: Meta-validation: this many fixed episodes are scored every ``validate_every`` training episodes.
VALIDATION_EPISODES = 100
#: With ``augment``, the chance that a colour training image is shown in grey (the meta-test sets are grey).
GREY_PROBABILITY = 0.5


def rotated(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image turned by a random multiple of 90 degrees, and that multiple (0-3): a self-supervised task."""
    turns = torch.randint(0, 4, (len(x),), generator=generator)
    out = x.clone()
    for k in range(1, 4):
        chosen = turns == k
        out[chosen] = torch.rot90(x[chosen], k, (2, 3))
    return out, turns


class FewShotLearner(nn.Module):
    """Base class of the few-shot image learners.

    Following scikit-learn, every ``__init__`` argument is stored under its own name, so
    :meth:`get_params` can rebuild the learner and a MONAI bundle config can construct it
    with ``_target_``. A subclass builds its modules in ``__init__`` and defines:

    - :meth:`embed`: images -> embeddings;
    - :meth:`support_state`: what its head keeps of a labelled support set (differentiable);
    - :meth:`logits`: class scores of query embeddings given that state (TorchScript-compatible);
    - :meth:`support`: the remembered state held in the buffers named in ``support_buffers``.

    Training (:meth:`fit`) pre-trains the encoder as a classifier on all the training classes
    (``pretrain_epochs``; with ``rotation_weight``, also to tell how far each image was turned,
    a self-supervised task) and then meta-trains it on episodes (the "Meta-Baseline" recipe).
    :meth:`predict_proba` answers one episode; :meth:`remember` stores a support set in the
    module's buffers, after which ``forward(image)`` returns scores over its classes: a plain
    ``nn.Module`` that MONAI bundles run and TorchScript exports.
    """

    #: Buffers holding the remembered support set; resized to a checkpoint's shapes on loading.
    support_buffers: tuple[str, ...] = ()
    #: True when predictions depend only on each image's own embedding (eval-mode batch norm),
    #: so an evaluation may embed every image once and reuse it across episodes.
    embeds_independently: bool = True
    #: Python-side state that TorchScript export leaves out.
    __jit_ignored_attributes__: ClassVar[list[str]] = ["_generator", "history_", "classes_"]

    def __init__(self, *, in_channels: int = 3, image_size: int = 28, lr: float = 1e-3, max_episodes: int = 2000,
                 max_seconds: float | None = None, seed: int = 0, n_way: int = 5, k_shot: int = 5, n_query: int = 15,
                 augment: bool = False, pretrain_epochs: float = 0.0, pretrain_lr: float = 2e-3,
                 rotation_weight: float = 0.0, validate_every: int = 500) -> None:
        super().__init__()
        self.in_channels, self.image_size = in_channels, image_size
        self.lr, self.max_episodes, self.max_seconds, self.seed = lr, max_episodes, max_seconds, seed
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.augment, self.pretrain_epochs, self.pretrain_lr = augment, pretrain_epochs, pretrain_lr
        self.rotation_weight = rotation_weight
        self.validate_every = validate_every
        self.history_: dict[str, Any] = {}
        self.classes_: list[str] = []
        torch.manual_seed(seed)
        self._generator = torch.Generator().manual_seed(seed)

    # -- what subclasses define -------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` -> embeddings ``(N, D)``."""
        raise NotImplementedError

    def support_state(self, zs: torch.Tensor, ys: torch.Tensor, n_way: int) -> dict[str, torch.Tensor]:
        """What the head keeps of support embeddings ``zs`` with labels ``ys`` in ``0..n_way-1``."""
        raise NotImplementedError

    def logits(self, zq: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class scores ``(n_query, n_way)`` of query embeddings given a support state."""
        raise NotImplementedError

    def support(self) -> dict[str, torch.Tensor]:
        """The remembered support state (the buffers named in ``support_buffers``)."""
        raise NotImplementedError

    # -- episodes -----------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return self.encoder.out_features

    def episode_logits(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                       n_way: int) -> torch.Tensor:
        """Class scores ``(n_query, n_way)`` for the query images given a labelled support set."""
        z = self.embed(torch.cat([support_x, query_x]))
        return self.logits(z[len(support_x):], self.support_state(z[: len(support_x)], support_y, n_way))

    def episode_loss(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss of one episode and its query logits (cross-entropy unless overridden)."""
        sy = torch.as_tensor(task.support_y)
        logits = self.episode_logits(task.support_x, sy, task.query_x, int(sy.max()) + 1)
        return F.cross_entropy(logits, torch.as_tensor(task.query_y)), logits

    # -- the shared surface -------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Scores over the classes of the remembered support set (what a MONAI bundle runs)."""
        return self.logits(self.embed(image), self.support())

    def fit(self, images: torch.Tensor, labels: Sequence | np.ndarray, val_images: torch.Tensor | None = None,
            val_labels: Sequence | np.ndarray | None = None, *, show_progress: bool = True) -> FewShotLearner:
        """Learn from labelled images of many classes: classifier pre-training, then episodic meta-training.

        ``labels`` are class names or numbers. With a validation set (other images of the same or
        other classes), the weights that scored best on fixed validation episodes are kept.
        """
        labels = np.asarray(labels)
        validate = None
        if val_images is not None and val_labels is not None:
            validate = self._validator(val_images, np.asarray(val_labels))
        if self.pretrain_epochs > 0:
            self.pretrain(images, labels, show_progress=show_progress)
        if self.max_episodes > 0 and (self.max_seconds is None or self.max_seconds > 0):
            n_way = min(self.n_way, len(np.unique(labels)))
            sampler = EpisodeSampler(labels, n_way, self.k_shot, self.n_query, seed=self.seed)
            self.meta_fit(sampler.tasks(images), show_progress=show_progress, validate=validate)
        return self

    def pretrain(self, images: torch.Tensor, labels: Sequence | np.ndarray, *, batch_size: int = 128,
                 show_progress: bool = True) -> FewShotLearner:
        """Train the encoder as a classifier over all the classes of ``labels`` (linear heads, dropped after).

        This is the "Baseline" of Chen et al. (A Closer Look at Few-shot Classification, 2019)
        and the first stage of Meta-Baseline (Chen et al., 2021). With ``rotation_weight`` > 0 a
        second head learns, from a turned copy of each batch, by how many quarter turns it was
        turned (Gidaris et al., Boosting Few-Shot Visual Learning with Self-Supervision, 2019).
        """
        classes, y = np.unique(np.asarray(labels), return_inverse=True)
        y = torch.as_tensor(y)
        head, rotation_head = nn.Linear(self.embedding_dim, len(classes)), nn.Linear(self.embedding_dim, 4)
        params = [*self.encoder.parameters(), *head.parameters(), *rotation_head.parameters()]
        steps = max(1, round(self.pretrain_epochs * len(images) / batch_size))
        optimiser = torch.optim.AdamW(params, lr=self.pretrain_lr, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, self.pretrain_lr, total_steps=steps, pct_start=0.1)
        losses: list[float] = []
        start = time.monotonic()
        self.train()
        with progress(f"Pre-training {type(self).__name__} as a {len(classes)}-class classifier", steps,
                      force_terminal=None if show_progress else False) as advance:
            for step in range(1, steps + 1):
                idx = torch.randint(0, len(images), (batch_size,), generator=self._generator)
                x = images[idx]
                if self.augment:
                    x = augment(x, self._generator, grey=GREY_PROBABILITY)
                loss = F.cross_entropy(head(self.embed(x)), y[idx])
                if self.rotation_weight:
                    turned, turns = rotated(x, self._generator)
                    loss = loss + self.rotation_weight * F.cross_entropy(rotation_head(self.embed(turned)), turns)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                losses.append(loss.item())
                advance(step, f"step {step} loss {np.mean(losses[-50:]):.3f}")
        self.eval()
        self.history_["pretrain"] = {"classes": len(classes), "steps": steps, "batch_size": batch_size,
                                     "epochs": self.pretrain_epochs, "rotation_weight": self.rotation_weight,
                                     "seconds": time.monotonic() - start,
                                     "final_loss": float(np.mean(losses[-50:]))}
        return self

    def meta_fit(self, tasks: Iterable[Task], *, show_progress: bool = True,
                 validate: Callable[[], float] | None = None) -> FewShotLearner:
        """Meta-train on episodes until ``max_episodes`` or ``max_seconds``, whichever comes first.

        With ``validate`` (a function returning validation accuracy), the weights are scored
        before training, every ``validate_every`` episodes and at the end, and the best are kept.
        """
        optimiser = torch.optim.Adam(self.parameters(), lr=self.lr)
        budget = self.max_seconds
        total = budget if budget else float(self.max_episodes)
        losses, accuracies, validation = [], [], []
        best: tuple[float, int, dict] | None = None

        def checkpoint(episode: int) -> None:
            nonlocal best
            score = validate()
            validation.append((episode, score))
            if best is None or score > best[0]:
                best = (score, episode, copy.deepcopy(self.state_dict()))
            self.train()

        start = time.monotonic()
        if validate:
            checkpoint(0)
        self.train()
        episode = 0
        with progress(f"Meta-training {type(self).__name__}", total, force_terminal=None if show_progress
                      else False) as advance:
            for episode, task in enumerate(tasks, start=1):
                if self.augment:
                    task = Task(augment(task.support_x, self._generator, grey=GREY_PROBABILITY), task.support_y,
                                augment(task.query_x, self._generator, grey=GREY_PROBABILITY), task.query_y,
                                task.metadata)
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
                done = episode >= self.max_episodes or bool(budget and elapsed >= budget)
                if validate and (done or (self.validate_every and episode % self.validate_every == 0)):
                    checkpoint(episode)
                if done:
                    break
        if best is not None:
            self.load_state_dict(best[2])
        self.eval()
        self.history_.update({"episodes": len(losses), "seconds": time.monotonic() - start,
                              "loss": losses, "train_accuracy": accuracies})
        if best is not None:
            self.history_.update({"validation": validation, "best_episode": best[1],
                                  "best_validation_accuracy": best[0]})
        return self

    def _validator(self, images: torch.Tensor, labels: np.ndarray) -> Callable[[], float]:
        """Mean accuracy on fixed validation episodes (the same ones at every check)."""
        from medmeta.evaluation import episode_accuracies

        n_way = min(self.n_way, len(np.unique(labels)))
        sampler = EpisodeSampler(labels, n_way, self.k_shot, 15, seed=self.seed + 12345, min_query=1)
        episodes = [sampler.sample() for _ in range(VALIDATION_EPISODES)]
        return lambda: float(np.mean(episode_accuracies(self, images, episodes)))

    @torch.no_grad()
    def embed_images(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Embeddings of many images, in batches, in evaluation mode."""
        self.eval()
        if len(x) == 0:
            return torch.empty(0, self.embedding_dim)
        return torch.cat([self.embed(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def predict_proba_embedded(self, zs: torch.Tensor, ys: np.ndarray | torch.Tensor, zq: torch.Tensor) -> np.ndarray:
        """Like :meth:`predict_proba`, from embeddings computed with :meth:`embed_images`."""
        self.eval()
        ys = torch.as_tensor(ys)
        return self.logits(zq, self.support_state(zs, ys, int(ys.max()) + 1)).softmax(1).numpy()

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

    # -- the deployable support set -----------------------------------------------------------
    @torch.no_grad()
    def remember(self, support_x: torch.Tensor, support_y: np.ndarray | torch.Tensor,
                 classes: Sequence[str] | None = None) -> FewShotLearner:
        """Store a labelled support set in the buffers; ``forward(image)`` then scores its classes.

        ``support_y`` holds class numbers ``0..C-1``; ``classes`` names them.
        """
        ys = torch.as_tensor(np.asarray(support_y), dtype=torch.long)
        n_way = len(classes) if classes is not None else int(ys.max()) + 1
        state = self.support_state(self.embed_images(support_x), ys, n_way)
        for name in self.support_buffers:
            self._buffers[name] = state[name].detach().clone()
        self.classes_ = list(classes) if classes is not None else [str(i) for i in range(n_way)]
        self._record_support_shape(n_way, len(ys))
        return self

    def _record_support_shape(self, n_classes: int, n_support: int) -> None:
        """Keep the shape parameters in step with the buffers, so ``get_params`` rebuilds a matching module."""
        self.n_classes = n_classes

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A support set of any size loads: the support buffers take the checkpoint's shapes.
        for name in self.support_buffers:
            value = state_dict.get(prefix + name)
            if value is not None and name in self._buffers:
                self._buffers[name] = torch.empty(value.shape, dtype=self._buffers[name].dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` (class, settings, classes, training summary) and ``model.safetensors``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        summary = {k: v for k, v in self.history_.items() if not isinstance(v, list)}
        config = {"learner": type(self).__name__, "params": self.get_params(), "classes": self.classes_,
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
    learner.classes_ = list(config.get("classes", []))
    return learner.eval()

"""The stages of a federated task, and the Per-FedAvg client step they share.

A run has four stages; only sums of client statistics and model parameters ever leave a client:

1. **statistics**: each client sends sums over its data (counts, sums of squares...), which the server
   adds up into what the centrally trained model computes from the pooled data (feature scaling, the
   population AR baseline), and builds the initial model (:meth:`FederatedTask.setup`);
2. **training**, ``rounds`` times: each client starts from the global parameters, runs ``local_steps``
   MAML meta-updates on its own tasks (:func:`local_meta_update`) and returns its parameters; the server
   averages them, weighted by :meth:`FederatedTask.train`'s weight (FedAvg);
3. **calibration**: each client sends sums that need the final model (conformal residual histograms);
4. the server assembles and saves the model in the format of the centrally trained one.

Statistics and calibration are plain sums over clients, which is what secure aggregation computes.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medmeta.federated.clients import client_data
from medmeta.federated.settings import FederatedSettings
from medmeta.learners.maml import MAML
from medmeta.tasks import Task

State = dict[str, Tensor]


@dataclass
class Sums:
    """Client statistics that add up across clients: dense ``arrays`` and sparse ``counts`` (key -> number)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, Counter] = field(default_factory=dict)

    def __add__(self, other: Sums) -> Sums:
        arrays = dict(self.arrays)
        for k, v in other.arrays.items():
            arrays[k] = arrays[k] + v if k in arrays else np.array(v)
        counts = {k: Counter(v) for k, v in self.counts.items()}
        for k, v in other.counts.items():
            counts.setdefault(k, Counter()).update(v)
        return Sums(arrays, counts)

    def counts_json(self) -> str:
        return json.dumps({k: dict(v) for k, v in self.counts.items()})

    @classmethod
    def from_message(cls, arrays: dict[str, np.ndarray], counts_json: str) -> Sums:
        return cls(dict(arrays), {k: Counter(v) for k, v in json.loads(counts_json or "{}").items()})


def trainable_state(maml: MAML, prefix: str = "") -> State:
    """The parameters a client trains and sends: the network's and the inner learning rates (not the buffers)."""
    return {prefix + name: p.detach().clone() for name, p in maml.named_parameters()}


def load_trainable(maml: MAML, state: State, prefix: str = "") -> None:
    """Load the parameters of :func:`trainable_state` (keys under ``prefix``) into ``maml``."""
    own = {name: state[prefix + name] for name, _ in maml.named_parameters()}
    maml.load_state_dict({**maml.state_dict(), **own})


def local_meta_update(maml: MAML, tasks: Iterator[Task], steps: int, seed: int) -> float:
    """The Per-FedAvg client step: ``steps`` MAML meta-updates of ``maml`` on the client's own ``tasks``.

    Each update is the engine's :func:`~medmeta.learners.maml.meta_gradient` on a meta-batch followed by
    the estimator's Adam step (its state starts afresh each round). Returns the mean meta-loss.
    """
    maml.max_steps, maml.max_seconds, maml.seed = steps, None, seed
    maml.meta_fit(tasks, show_progress=False)
    return float(np.mean(maml.history_["loss"]))


class FederatedTask(ABC):
    """One model trained federatedly: the client half and the server half of each stage."""

    name: str

    def __init__(self, settings: FederatedSettings) -> None:
        self.settings = settings

    def load(self, path: str | Path, partition: int | None) -> Any:
        """The client's data (see :func:`~medmeta.federated.clients.client_data`)."""
        return client_data(self.name, path, self.settings.partition_by, partition)

    # -- client side ---------------------------------------------------------------------------
    @abstractmethod
    def statistics(self, data: Any) -> Sums:
        """Stage 1: sums over the client's data."""

    @abstractmethod
    def train(self, data: Any, setup: dict[str, Any], state: State, round_: int) -> tuple[State, float, float]:
        """Stage 2: ``(new parameters, aggregation weight, mean meta-loss)`` after local meta-training."""

    def calibration(self, data: Any, setup: dict[str, Any], state: State) -> Sums:
        """Stage 3: sums that need the final model (none by default)."""
        return Sums()

    # -- server side ---------------------------------------------------------------------------
    @abstractmethod
    def setup(self, sums: Sums) -> tuple[dict[str, Any], State]:
        """From the summed statistics: the setup every client receives (JSON-able) and the initial parameters."""

    @abstractmethod
    def model(self, setup: dict[str, Any], state: State) -> Any:
        """The model with parameters ``state`` (for evaluation during training; not calibrated)."""

    @abstractmethod
    def save(self, setup: dict[str, Any], state: State, calibration: Sums, report: dict[str, Any],
             output: str | Path) -> Path:
        """Assemble the final model, write it to ``output`` in the format of the centrally trained one."""


def set_threads() -> None:
    """Tiny networks: one thread per client process (thread pools only add contention)."""
    torch.set_num_threads(1)

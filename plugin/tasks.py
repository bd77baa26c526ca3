"""Tasks and episodes: the unit of meta-learning.

A :class:`Task` is a small learning problem: a support set to adapt on and a query set to
be judged on. Image episodes (N-way K-shot) and patient tasks built from FHIR records are
both tasks, so every learner in medmeta consumes the same object.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medmeta.errors import DataError


@dataclass
class Task:
    """Support and query examples of one learning problem.

    ``x`` and ``y`` are anything indexable with a length (NumPy arrays, tensors). For
    classification episodes ``y`` holds episode labels ``0..N-1`` and ``metadata["classes"]``
    the class each label stands for.
    """

    support_x: Any
    support_y: Any
    query_x: Any
    query_y: Any
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part in ("support", "query"):
            nx, ny = len(getattr(self, f"{part}_x")), len(getattr(self, f"{part}_y"))
            if nx != ny:
                raise ValueError(f"{part} set has {nx} inputs but {ny} targets")

    @property
    def n_support(self) -> int:
        return len(self.support_y)

    @property
    def n_query(self) -> int:
        return len(self.query_y)


@dataclass(frozen=True)
class ClassSplit:
    """Disjoint classes for meta-training, meta-validation and meta-testing."""

    train: frozenset[Hashable]
    val: frozenset[Hashable] = frozenset()
    test: frozenset[Hashable] = frozenset()

    def __post_init__(self) -> None:
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = getattr(self, a) & getattr(self, b)
            if shared:
                raise ValueError(f"classes in both {a} and {b}: {sorted(map(str, shared))}")

    @classmethod
    def random(cls, classes: Iterable[Hashable], n_val: int, n_test: int, seed: int = 0) -> ClassSplit:
        """Split ``classes`` at random (seeded) into ``n_val`` and ``n_test`` classes and the rest."""
        pool = sorted(set(classes), key=str)
        if n_val + n_test > len(pool):
            raise ValueError(f"cannot take {n_val} + {n_test} classes from {len(pool)}")
        order = np.random.default_rng(seed).permutation(len(pool))
        picked = [pool[i] for i in order]
        return cls(
            train=frozenset(picked[n_val + n_test:]),
            val=frozenset(picked[:n_val]),
            test=frozenset(picked[n_val:n_val + n_test]),
        )


@dataclass(frozen=True)
class Episode:
    """Indices of one episode's support and query items, grouped by class."""

    classes: tuple[Hashable, ...]
    support: np.ndarray
    query: np.ndarray
    #: Queries of each class, when they differ (a sampler with ``min_query``); None: equal shares.
    query_counts: tuple[int, ...] | None = None

    @property
    def support_labels(self) -> np.ndarray:
        """Episode labels ``0..N-1`` of the support items (grouped by class, equal shots)."""
        n = len(self.classes)
        return np.repeat(np.arange(n), len(self.support) // n)

    @property
    def query_labels(self) -> np.ndarray:
        """Episode labels ``0..N-1`` of the query items."""
        n = len(self.classes)
        return np.repeat(np.arange(n), self.query_counts or [len(self.query) // n] * n)


class EpisodeSampler:
    """Seeded N-way K-shot episodes over labelled items.

    ``labels[i]`` is the class of item ``i``; ``classes`` restricts the episodes to some
    classes (for example one side of a :class:`ClassSplit`). Every class must have at least
    ``k_shot + n_query`` items, which is checked up front with an error naming the classes
    that fall short. With ``min_query``, a class needs only ``k_shot + min_query`` items and
    one with fewer than ``k_shot + n_query`` gives all its remaining items as queries (so the
    episodes of a small class have fewer queries, never a repeated image).
    """

    def __init__(
        self,
        labels: Sequence[Hashable] | np.ndarray,
        n_way: int,
        k_shot: int,
        n_query: int,
        *,
        classes: Iterable[Hashable] | None = None,
        seed: int | None = 0,
        min_query: int | None = None,
    ) -> None:
        if n_way < 1 or k_shot < 1 or n_query < 0:
            raise ValueError(f"need n_way >= 1, k_shot >= 1, n_query >= 0 (got {n_way}, {k_shot}, {n_query})")
        labels = np.asarray(labels, dtype=object)
        present = {c: np.flatnonzero(labels == c) for c in dict.fromkeys(labels.tolist())}
        wanted = list(dict.fromkeys(classes)) if classes is not None else list(present)
        unknown = [c for c in wanted if c not in present]
        if unknown:
            raise DataError(f"classes with no items: {sorted(map(str, unknown))}", field="labels")
        if n_way > len(wanted):
            raise DataError(f"{n_way}-way episodes need {n_way} classes, only {len(wanted)} available: "
                            f"{sorted(map(str, wanted))}", field="labels")
        if min_query is not None and not 1 <= min_query <= max(n_query, 1):
            raise ValueError(f"min_query must be in 1..n_query, got {min_query}")
        need = k_shot + (n_query if min_query is None else min_query)
        short = {str(c): len(present[c]) for c in wanted if len(present[c]) < need}
        if short:
            what = (f"{k_shot}-shot {n_query}-query episodes" if min_query is None
                    else f"{k_shot}-shot episodes with at least {min_query} query image(s)")
            raise DataError(f"{what} need {need} items per class; too few in {short}", field="labels")
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.classes: tuple[Hashable, ...] = tuple(wanted)
        self._items = {c: present[c] for c in wanted}
        self._rng = np.random.default_rng(seed)

    def sample(self) -> Episode:
        """Draw the next episode."""
        rng = self._rng
        picked = [self.classes[i] for i in rng.choice(len(self.classes), self.n_way, replace=False)]
        support, query = [], []
        for c in picked:
            items = self._items[c]
            chosen = rng.choice(items, min(self.k_shot + self.n_query, len(items)), replace=False)
            support.append(chosen[: self.k_shot])
            query.append(chosen[self.k_shot:])
        counts = tuple(len(q) for q in query)
        return Episode(tuple(picked), np.concatenate(support), np.concatenate(query),
                       None if len(set(counts)) == 1 else counts)

    def task(self, x: Any, episode: Episode | None = None) -> Task:
        """Draw an episode (or use ``episode``) and gather its items from ``x`` into a :class:`Task`."""
        ep = episode or self.sample()
        return Task(
            x[ep.support],
            ep.support_labels,
            x[ep.query],
            ep.query_labels,
            {"classes": ep.classes, "support_ids": ep.support, "query_ids": ep.query},
        )

    def tasks(self, x: Any, n: int | None = None) -> Iterator[Task]:
        """``n`` tasks, or an endless stream when ``n`` is None."""
        count = 0
        while n is None or count < n:
            yield self.task(x)
            count += 1

"""Few-shot evaluation: accuracy of any learner on given episodes, the same episodes for every learner.

A *method* is anything with ``predict_proba(support_x, support_y, query_x)``. Methods whose
predictions depend on each image's own embedding (``embeds_independently``, with
``embed_images`` and ``predict_proba_embedded``) are scored by embedding every image of the
episodes once, which makes 600-episode protocols cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmeta.errors import DataError
from medmeta.progress import progress
from medmeta.stats import mean_ci
from medmeta.tasks import Episode, EpisodeSampler


def episode_accuracies(method: Any, x: torch.Tensor, episodes: Sequence[Episode], *,
                       description: str | None = None, predictions: list | None = None) -> np.ndarray:
    """Query accuracy of ``method`` in each episode (indices of ``episodes`` point into ``x``).

    ``predictions``, when given a list, receives each episode's ``(probabilities, query labels)``.
    """
    out = np.empty(len(episodes))
    bar = progress(description, len(episodes)) if description else nullcontext(lambda *a: None)
    with bar as advance:
        if getattr(method, "embeds_independently", False):
            ids = np.unique(np.concatenate([np.concatenate([e.support, e.query]) for e in episodes]))
            z = method.embed_images(x[torch.as_tensor(ids)])
            take = lambda idx: z[torch.as_tensor(np.searchsorted(ids, idx))]  # noqa: E731
            for n, ep in enumerate(episodes):
                proba = method.predict_proba_embedded(take(ep.support), ep.support_labels, take(ep.query))
                out[n] = np.mean(proba.argmax(1) == ep.query_labels)
                if predictions is not None:
                    predictions.append((proba, np.asarray(ep.query_labels)))
                advance(n + 1)
        else:
            for n, ep in enumerate(episodes):
                proba = np.asarray(method.predict_proba(x[torch.as_tensor(ep.support)], ep.support_labels,
                                                        x[torch.as_tensor(ep.query)]))
                out[n] = np.mean(proba.argmax(1) == ep.query_labels)
                if predictions is not None:
                    predictions.append((proba, np.asarray(ep.query_labels)))
                advance(n + 1)
    return out


def calibration(predictions: Sequence[tuple[np.ndarray, np.ndarray]], bins: int = 10) -> dict:
    """How far the predicted class's probability can be trusted: queries binned by it (equal widths from
    1/n_way to 1), each bin's mean probability and accuracy, and the expected calibration error (ECE)."""
    confidence = np.concatenate([p.max(1) for p, _ in predictions])
    correct = np.concatenate([p.argmax(1) == y for p, y in predictions]).astype(float)
    n_way = predictions[0][0].shape[1]
    edges = np.linspace(1.0 / n_way, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        chosen = which == b
        if chosen.any():
            rows.append({"low": round(float(edges[b]), 4), "high": round(float(edges[b + 1]), 4),
                         "n": int(chosen.sum()), "confidence": float(confidence[chosen].mean()),
                         "accuracy": float(correct[chosen].mean())})
    ece = sum(r["n"] * abs(r["confidence"] - r["accuracy"]) for r in rows) / len(confidence)
    return {"ece": float(ece), "queries": len(confidence), "bins": rows}


def draw_episodes(labels: Sequence | np.ndarray, n_way: int, k_shot: int, n_query: int, n: int, *,
                  seed: int | Sequence[int] = 0) -> list[Episode]:
    """``n`` seeded episodes; a class with fewer than ``k_shot + n_query`` items gives fewer queries.

    The same arguments give the same episodes, whichever method they are for.
    """
    seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
    sampler = EpisodeSampler(labels, n_way, k_shot, n_query, seed=seed, min_query=1)
    return [sampler.sample() for _ in range(n)]


def summary(accuracies: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``accuracy`` (mean over episodes), ``ci95`` (Student-t half-width) and ``episodes``."""
    estimate = mean_ci(accuracies)
    return {"accuracy": estimate.mean, "ci95": estimate.ci, "episodes": estimate.n}


def protocol_results(methods: Mapping[str, Any], data_dir: str | Path | None = None, *,
                     shots: Sequence[int] = (1, 5, 10), episodes: int = 600, queries: int = 15, seed: int = 0,
                     benchmarks: Sequence[str] | None = None, accuracies: dict | None = None) -> list[dict]:
    """Score every method on the same episodes of meta-validation and every meta-test set of the protocol.

    Returns one row per (benchmark, shots, method). ``accuracies``, when given a dict, receives
    each row's per-episode accuracies (for paired comparisons).
    """
    from medmeta.protocol import META_TEST_SETS, meta_test_pool, meta_train_pool

    sets = [("meta-val", None, 5)] + [(b.name, b, b.n_way) for b in META_TEST_SETS]
    rows = []
    for index, (name, bench, n_way) in enumerate(sets):
        if benchmarks is not None and name not in benchmarks:
            continue
        pools: dict[tuple[int, int], tuple[torch.Tensor, np.ndarray]] = {}
        for k_shot in shots:
            for method_name, method in methods.items():
                form = (getattr(method, "in_channels", 3), getattr(method, "image_size", 28))
                if form not in pools:
                    pools[form] = (meta_train_pool("val", *form, data_dir) if bench is None
                                   else meta_test_pool(bench, *form, data_dir))
                x, labels = pools[form]
                eps = draw_episodes(labels, n_way, k_shot, queries, episodes, seed=(seed, index, k_shot))
                acc = episode_accuracies(method, x, eps,
                                         description=f"{method_name} on {name}, {n_way}-way {k_shot}-shot")
                row = {"benchmark": name, "method": method_name, "ways": n_way, "shots": k_shot,
                       "queries": queries, **summary(acc)}
                rows.append(row)
                if accuracies is not None:
                    accuracies[(name, k_shot, method_name)] = acc
    return rows


def evaluate_file(bundle: str | Path, data: str | Path, *, split: str = "test", ways: int, shots: int,
                  episodes: int = 600, queries: int = 15, seed: int = 0) -> dict:
    """Few-shot accuracy of a bundle's network on one split of any MedMNIST-layout ``.npz`` file.

    Every class of the split takes part. A class with fewer than ``shots + queries`` images
    gives all its images beyond the support as queries (so its episodes have fewer queries;
    ``short_classes`` lists them); a request that cannot be met (more ways than classes, a
    class with no image left for a query) is refused with a :class:`~medmeta.errors.DataError`.
    ``calibration`` bins every query by its predicted class's probability (:func:`calibration`).
    """
    import time

    import medmeta
    from medmeta.bundle import load_bundle
    from medmeta.datasets.medmnist import load_medmnist
    from medmeta.imaging import to_tensor

    start = time.monotonic()
    if ways < 2 or shots < 1 or episodes < 1 or queries < 1:
        raise DataError(f"need ways >= 2, shots >= 1, queries >= 1 and episodes >= 1 (got ways={ways}, "
                        f"shots={shots}, queries={queries}, episodes={episodes})", source=data)
    images = load_medmnist(data, split)
    counts = {name: n for name, n in images.class_counts().items() if n > 0}
    if ways > len(counts):
        raise DataError(f"{ways}-way episodes need {ways} classes; the {split} split has {len(counts)}: "
                        f"{sorted(counts)}", source=data, field=f"{split}_labels")
    too_small = {name: n for name, n in counts.items() if n <= shots}
    if too_small:
        raise DataError(f"{shots}-shot episodes need more than {shots} images of every class (one or more left "
                        f"for queries); too few in {too_small}. Use fewer shots.", source=data,
                        field=f"{split}_labels")
    learner = load_bundle(bundle)
    x = to_tensor(images.images, learner.in_channels, learner.image_size)
    labels = np.asarray(images.class_names, dtype=object)[images.labels]
    eps = draw_episodes(labels, ways, shots, queries, episodes, seed=(seed, ways, shots))
    predictions: list = []
    acc = episode_accuracies(learner, x, eps, description=f"{Path(bundle).name} on {Path(data).name}",
                             predictions=predictions)
    return {
        **summary(acc), "ways": ways, "shots": shots, "queries": queries, "split": split,
        "calibration": calibration(predictions),
        "short_classes": {name: n - shots for name, n in counts.items() if n < shots + queries},
        "class_counts": counts, "data": str(data), "bundle": str(bundle), "learner": type(learner).__name__,
        "seed": seed, "seconds": round(time.monotonic() - start, 2), "medmeta_version": medmeta.__version__,
        "disclaimer": medmeta.DISCLAIMER,
    }

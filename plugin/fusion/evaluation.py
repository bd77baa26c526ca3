"""Comparing modalities honestly: patient-level cross-validation and bootstrap tables over patients.

- :func:`patient_folds`: every example of a patient in the same fold;
- :func:`cross_validate`: out-of-fold predictions of several :class:`~medmeta.fusion.model.FusionModel`
  configurations (for example each modality alone and fused) on the same folds, plus predictions with a
  modality withheld;
- :func:`score_table`: metrics per method with 95% CIs from a bootstrap **over patients** (all of a patient's
  examples are resampled together), and each method's paired difference from a reference method.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medmeta.fusion.datasets import Paired
from medmeta.fusion.model import FusionModel
from medmeta.stats import bootstrap_ci

#: metric -> (per-example value, aggregate of the mean); "within20" is the % of predictions within 20% of the truth.
METRICS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], Callable[[float], float]]] = {
    "mae": (lambda y, p: np.abs(p - y), lambda m: m),
    "rmse": (lambda y, p: (p - y) ** 2, np.sqrt),
    "within20": (lambda y, p: 100.0 * (np.abs(p - y) <= 0.2 * y), lambda m: m),
}


def patient_folds(patients: Sequence[Any], folds: int = 5, seed: int = 0) -> np.ndarray:
    """The fold of each example; patients are shuffled with ``seed`` and dealt round-robin to folds."""
    unique = np.unique(np.asarray(patients).astype(str))
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = dict(zip(unique[order], np.arange(len(unique)) % folds, strict=True))
    return np.array([fold_of[str(p)] for p in patients])


def cross_validate(data: Paired, candidates: Mapping[str, Mapping[str, Any]], *, folds: int = 5, seed: int = 0,
                   withhold: Mapping[str, tuple[str, str]] | None = None, keep_models: bool = False,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Out-of-fold predictions of each candidate on the examples of ``data`` with a finite target.

    ``candidates``: name -> ``{"modalities": [names], **FusionModel settings}``. An example with none of a
    candidate's modalities is predicted by the training folds' mean target (counted in ``fallback``).
    Folds group examples by patient (``data.x.ids``). ``withhold``: name -> ``(candidate, modality)``: that
    candidate's predictions with the modality hidden (examples left with none fall back to the mean as above).
    ``intervals[name][level]`` are the ``(low, high)`` prediction intervals (NaN where none). With
    ``keep_models``, ``models[name][k]`` is the candidate trained without fold ``k``.
    """
    keep = np.flatnonzero(np.isfinite(data.y))
    data = data.subset(keep)
    fold = patient_folds(data.x.ids, folds, seed)
    by_name = {m.name: m for m in data.modalities}
    rows = {**{n: (n, None) for n in candidates}, **(withhold or {})}
    predictions = {name: np.full(len(data), np.nan) for name in rows}
    intervals: dict[str, dict[str, np.ndarray]] = {name: {} for name in rows}
    fallback = {name: np.zeros(len(data), dtype=bool) for name in rows}
    models: dict[str, list[FusionModel]] = {name: [] for name in candidates}
    start = time.monotonic()
    for k in range(folds):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        for name, settings in candidates.items():
            settings = dict(settings)
            use = settings.pop("modalities")
            model = FusionModel([by_name[n] for n in use], **settings).fit(data.x[train], data.y[train])
            if keep_models:
                models[name].append(model)
            for row, (candidate, hidden) in rows.items():
                if candidate != name:
                    continue
                x = data.x[test] if hidden is None else data.x[test].without(hidden)
                has = x.present(use).any(1)
                predictions[row][test[has]] = model.predict(x[np.flatnonzero(has)])
                if model.task == "regression" and model.calibration_:
                    for level, (lo, hi) in model.predict_interval(x[np.flatnonzero(has)]).items():
                        bounds = intervals[row].setdefault(level, np.full((len(data), 2), np.nan))
                        bounds[test[has], 0], bounds[test[has], 1] = lo, hi
                predictions[row][test[~has]] = float(np.mean(data.y[train]))
                fallback[row][test[~has]] = True
        if progress:
            progress(f"fold {k + 1}/{folds} done ({time.monotonic() - start:.0f} s)")
    return {"index": keep, "fold": fold, "predictions": predictions, "intervals": intervals, "fallback": fallback,
            "models": models if keep_models else None, "seconds": round(time.monotonic() - start, 1)}


def _per_patient(values: np.ndarray, patients: np.ndarray) -> np.ndarray:
    return pd.Series(values).groupby(patients, sort=True).sum().to_numpy()


def _ci(statistic: Callable[..., float], *arrays: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    value, low, high = bootstrap_ci(statistic, *arrays, n_resamples=n_boot, seed=seed)
    return {"value": round(value, 4), "ci95": [round(low, 4), round(high, 4)]}


def score_table(y: np.ndarray, predictions: Mapping[str, np.ndarray], patients: Sequence[Any], *,
                metrics: Sequence[str] = ("mae",), references: Sequence[str] = (), n_boot: int = 1000,
                seed: int = 0) -> dict[str, Any]:
    """Each method's metrics with a 95% bootstrap CI over patients, and ``<metric>_minus_<reference>`` for each
    of ``references`` (paired: the same resampled patients for both methods)."""
    patients = np.asarray(patients).astype(str)
    counts = _per_patient(np.ones(len(y)), patients)
    table: dict[str, Any] = {}
    for method, p in predictions.items():
        entry: dict[str, Any] = {"n": len(y), "patients": len(counts)}
        for metric in metrics:
            per_example, aggregate = METRICS[metric]
            sums = _per_patient(per_example(y, p), patients)
            entry[metric] = _ci(lambda s, c, f=aggregate: f(s.sum() / c.sum()), sums, counts, n_boot=n_boot,
                                seed=seed)
            for reference in references:
                if reference == method:
                    continue
                ref = _per_patient(per_example(y, predictions[reference]), patients)
                entry[f"{metric}_minus_{reference}"] = _ci(
                    lambda s, r, c, f=aggregate: f(s.sum() / c.sum()) - f(r.sum() / c.sum()), sums, ref, counts,
                    n_boot=n_boot, seed=seed)
        table[method] = entry
    return table


def coverage_table(y: np.ndarray, intervals: Mapping[str, np.ndarray], patients: Sequence[Any],
                   groups: Mapping[str, np.ndarray], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """% of targets inside each interval level (``intervals[level]``: ``(N, 2)`` bounds, NaN where none), per group,
    with a 95% bootstrap CI over patients, and the median interval width."""
    patients = np.asarray(patients).astype(str)
    out: dict[str, Any] = {}
    for group, mask in groups.items():
        entry = {}
        for level, bounds in intervals.items():
            rows = mask & np.isfinite(bounds).all(1)
            if not rows.any():
                continue
            inside = 100.0 * ((y[rows] >= bounds[rows, 0]) & (y[rows] <= bounds[rows, 1]))
            hits, counts = _per_patient(inside, patients[rows]), _per_patient(np.ones(int(rows.sum())), patients[rows])
            entry[f"{round(float(level) * 100)}%"] = {
                "n": int(rows.sum()), **_ci(lambda h, c: h.sum() / c.sum(), hits, counts, n_boot=n_boot, seed=seed),
                "median_width": round(float(np.median(bounds[rows, 1] - bounds[rows, 0])), 4)}
        out[group] = entry
    return out


def grouped_scores(y: np.ndarray, predictions: Mapping[str, np.ndarray], patients: Sequence[Any],
                   groups: Mapping[str, np.ndarray], **kwargs: Any) -> dict[str, Any]:
    """:func:`score_table` on each group of examples (``groups``: name -> boolean mask); empty groups are skipped."""
    patients = np.asarray(patients)
    return {name: score_table(y[mask], {m: p[mask] for m, p in predictions.items()}, patients[mask], **kwargs)
            for name, mask in groups.items() if mask.any()}


def evaluate_model(model: FusionModel, data: Paired, baselines: Mapping[str, np.ndarray], *,
                   metrics: Sequence[str] = ("mae",), n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Score a trained model beside ``baselines`` (per-example predictions) on the examples of ``data`` with a
    known target, none of which it may have been trained on.

    Reported overall and per set of modalities the patients had, with each modality withheld in turn, and the
    coverage of the prediction intervals per set of modalities. Examples with none of the model's modalities
    are not scored and are counted.
    """
    known = np.isfinite(data.y)
    usable = known & data.x.present(model.names).any(1)
    x, y = data.x[np.flatnonzero(usable)], data.y[usable]
    patients = x.ids
    if not len(y):
        return {"examples_scored": 0, "examples_without_target": int((~known).sum()),
                "examples_without_any_modality": int((known & ~usable).sum()), "methods": {}}
    predictions = {"fused": model.predict(x), **{k: np.asarray(v, dtype=float)[usable] for k, v in baselines.items()}}
    used = np.array(["+".join(u) for u in x.used(model.names)])
    groups = {"all": np.ones(len(y), dtype=bool), **{f"had {k}": used == k for k in sorted(set(used))}}
    withheld = {}
    for name in model.names:
        rest = x.without(name)
        has = rest.present(model.names).any(1) & x.mask.get(name, np.zeros(len(y), dtype=bool))
        if has.any():
            rows = np.flatnonzero(has)
            table = score_table(y[rows], {"fused": predictions["fused"][rows],
                                          f"fused_without_{name}": model.predict(rest[rows])},
                                patients[rows], metrics=metrics, references=("fused",), n_boot=n_boot, seed=seed)
            withheld[name] = table
    out: dict[str, Any] = {
        "examples_scored": len(y), "patients_scored": len(np.unique(patients)),
        "examples_without_target": int((~known).sum()),
        "examples_without_any_modality": int((known & ~usable).sum()),
        "methods": grouped_scores(y, predictions, patients, groups, metrics=metrics, n_boot=n_boot, seed=seed),
        "modality_withheld": withheld,
    }
    if model.task == "regression" and model.calibration_:
        coverage: dict[str, Any] = {}
        for level, (lo, hi) in model.predict_interval(x).items():
            inside = (y >= lo) & (y <= hi)
            finite = np.isfinite(lo) & np.isfinite(hi)
            coverage[f"{round(float(level) * 100)}%"] = {
                k: {"n": int((m & finite).sum()),
                    "coverage": round(float(inside[m & finite].mean()) * 100, 1) if (m & finite).any() else None}
                for k, m in groups.items()}
        out["interval_coverage"] = coverage
    return out

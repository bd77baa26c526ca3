"""Evaluating warfarin dose predictions: the model against the clinical baselines, on the same patients.

- :func:`score_table`: MAE and % within 20% of the actual dose, overall, per dose band and per race,
  each with a bootstrap 95% CI, and each method's difference from the IWPC pharmacogenetic algorithm
  (paired bootstrap over patients);
- :func:`cross_validate`: patient-level K-fold cross-validation (the model never sees the patients it is
  scored on), with the adaptation curve of each fold;
- :func:`held_out_groups`: a whole group (a race, an indication) left out of training; the model adapts to
  it from its first ``k`` patients (in a seeded random order) and is scored on its patients after the first ``max(k)``;
- :func:`evaluate`: a trained model and the baselines on any file in the IWPC layout (``medmeta warfarin eval``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medmeta.stats import bootstrap_ci
from medmeta.treatment.iwpc import (
    FIXED_DOSE_MG_WEEK,
    PHARMACOGENETIC,
    iwpc_clinical_dose,
    iwpc_inputs,
    iwpc_pharmacogenetic_dose,
    race_category,
    sqrt_dose,
)
from medmeta.treatment.warfarin import DISCLAIMER, WarfarinDoseModel
from medmeta.treatment.warfarin_features import indication_group

SHOTS = (0, 5, 10, 20, 50)
REFERENCE = "iwpc_pharmacogenetic"
#: Dose bands of the IWPC paper (mg/week).
BANDS = ("<21", "21-49", ">49")


def dosed(frame: pd.DataFrame) -> pd.DataFrame:
    """The patients with a therapeutic dose (the only ones a dose prediction can be scored on)."""
    dose = pd.to_numeric(frame["dose_mg_week"], errors="coerce")
    return frame[dose > 0].reset_index(drop=True)


def dose_band(dose: np.ndarray) -> np.ndarray:
    return np.select([dose < 21, dose <= 49], BANDS[:2], default=BANDS[2])


def baselines(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The three clinical baselines (mg/week) for every patient of ``frame``."""
    return {"fixed_35": np.full(len(frame), FIXED_DOSE_MG_WEEK), "iwpc_clinical": iwpc_clinical_dose(frame),
            "iwpc_pharmacogenetic": iwpc_pharmacogenetic_dose(frame)}


def recalibrated_iwpc(frame: pd.DataFrame, support: pd.DataFrame) -> np.ndarray:
    """IWPC pharmacogenetic dose with its intercept shifted by the support patients' median sqrt-dose residual.

    The simplest local adaptation of a published formula: the baseline the model's adaptation must beat.
    """
    if len(support) == 0:
        return iwpc_pharmacogenetic_dose(frame)
    residual = np.sqrt(support["dose_mg_week"].astype(float).to_numpy()) - sqrt_dose(iwpc_inputs(support),
                                                                                     PHARMACOGENETIC)
    return np.square(np.maximum(sqrt_dose(iwpc_inputs(frame), PHARMACOGENETIC) + np.median(residual), 1.0))


def mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(p - y)))


def within20(y: np.ndarray, p: np.ndarray) -> float:
    """Percentage of patients whose prediction is within 20% of the actual dose."""
    return float(100 * np.mean(np.abs(p - y) <= 0.2 * y))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"mae": mae, "within20": within20}


def _ci(stat: Callable[..., float], *arrays: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    value, low, high = bootstrap_ci(stat, *arrays, n_resamples=n_boot, seed=seed)
    return {"value": round(value, 3), "ci95": [round(low, 3), round(high, 3)]}


def _scores(y: np.ndarray, p: np.ndarray, ref: np.ndarray | None, n_boot: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(y)}
    for name, fn in METRICS.items():
        out[name] = _ci(fn, y, p, n_boot=n_boot, seed=seed)
        if ref is not None:
            out[f"{name}_minus_{REFERENCE}"] = _ci(lambda a, b, c, fn=fn: fn(a, b) - fn(a, c), y, p, ref,
                                                   n_boot=n_boot, seed=seed)
    return out


def score_table(y: np.ndarray, predictions: dict[str, np.ndarray], race: np.ndarray, *, n_boot: int = 1000,
                seed: int = 0) -> dict[str, Any]:
    """Every method's scores overall, per dose band and per race (95% bootstrap CIs over patients).

    Each method other than the IWPC pharmacogenetic algorithm also gets its paired difference from it
    (``mae_minus_iwpc_pharmacogenetic`` < 0 and ``within20_minus_...`` > 0 mean better).
    """
    band = dose_band(y)
    ref = predictions.get(REFERENCE)
    table = {}
    for method, p in predictions.items():
        r = None if method == REFERENCE else ref
        entry = {"overall": _scores(y, p, r, n_boot, seed), "by_dose_band": {}, "by_race": {}}
        for key, labels in (("by_dose_band", band), ("by_race", race)):
            for label in dict.fromkeys(sorted(labels)):
                m = labels == label
                entry[key][str(label)] = _scores(y[m], p[m], None if r is None else r[m], n_boot, seed)
        table[method] = entry
    return table


def interval_coverage(y: np.ndarray, suggestions: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0
                      ) -> dict[str, Any]:
    """Share of actual doses inside each prediction interval, with its CI, and the intervals' median width."""
    out = {}
    for column in suggestions.columns:
        if column.startswith("interval") and column.endswith("_low_mg_week"):
            level = column[len("interval"):-len("_low_mg_week")]
            lo, hi = suggestions[column].to_numpy(), suggestions[f"interval{level}_high_mg_week"].to_numpy()
            inside = ((y >= lo) & (y <= hi)).astype(float)
            out[f"{level}%"] = {**_ci(lambda a: 100 * a.mean(), inside, n_boot=n_boot, seed=seed),
                                "median_width_mg_week": round(float(np.median(hi - lo)), 1)}
    return out


def adaptation_curve(model: WarfarinDoseModel, frame: pd.DataFrame, groups: np.ndarray, *,
                     shots: Sequence[int] = SHOTS, min_eval: int = 10, order_seed: int | None = 0) -> dict[str, Any]:
    """Adapt to each group from its first ``k`` patients; score on its patients after the first ``max(shots)``,
    so that every ``k`` and every baseline is scored on the same patients.

    "First" is in a random order drawn with ``order_seed``, or in file order when it is None (in the
    IWPC file, rows are grouped by contributing site, so file order puts one site in the support set
    and others in the scored set). Groups with fewer than ``max(shots) + min_eval`` patients are
    left out and listed.
    """
    most = max(shots)
    preds: dict[str, list[np.ndarray]] = {}
    ys, races, used, skipped = [], [], {}, {}
    rng = np.random.default_rng(order_seed)
    for group in dict.fromkeys(groups):
        rows = frame[groups == group]
        if order_seed is not None:
            rows = rows.iloc[rng.permutation(len(rows))]
        if len(rows) < most + min_eval:
            skipped[str(group)] = len(rows)
            continue
        target = rows.iloc[most:]
        used[str(group)] = len(target)
        ys.append(target["dose_mg_week"].astype(float).to_numpy())
        races.append(race_category(target).to_numpy())
        for name, p in baselines(target).items():
            preds.setdefault(name, []).append(p)
        for k in shots:
            support = rows.iloc[:k]
            preds.setdefault(f"medmeta_k{k}", []).append(model.predict(target, support=support))
            if k:
                preds.setdefault(f"iwpc_pharmacogenetic_recalibrated_k{k}", []).append(
                    recalibrated_iwpc(target, support))
    return {"groups_scored": used, "groups_too_small": skipped, "y": np.concatenate(ys) if ys else np.empty(0),
            "race": np.concatenate(races) if races else np.empty(0, dtype=object),
            "predictions": {k: np.concatenate(v) for k, v in preds.items()}}


def _curve_table(curve: dict[str, Any], n_boot: int, seed: int) -> dict[str, Any]:
    if len(curve["y"]) == 0:
        return {"groups_scored": {}, "groups_too_small": curve["groups_too_small"], "methods": {}}
    y, p = curve["y"], curve["predictions"]
    methods = {name: _scores(y, pred, None if name == REFERENCE else p[REFERENCE], n_boot, seed)
               for name, pred in p.items()}
    return {"groups_scored": curve["groups_scored"], "groups_too_small": curve["groups_too_small"],
            "methods": methods}


def cross_validate(frame: pd.DataFrame, params: dict[str, Any] | None = None, *, folds: int = 5, seed: int = 0,
                   shots: Sequence[int] = SHOTS, n_boot: int = 1000,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Patient-level K-fold cross-validation of :class:`WarfarinDoseModel` against the baselines.

    Every dosed patient is predicted once by a model trained without them (``k = 0``). Within each
    test fold, groups (race x indication) with enough patients also give an adaptation curve.
    """
    data = dosed(frame)
    y = data["dose_mg_week"].astype(float).to_numpy()
    fold = np.random.default_rng(seed).permutation(len(data)) % folds
    pred = np.empty(len(data))
    suggestions = []
    curves = []
    start = time.monotonic()
    for k in range(folds):
        train, test = data[fold != k], data[fold == k]
        model = WarfarinDoseModel(**(params or {})).fit(train)
        pred[fold == k] = model.predict(test)
        suggestions.append(model.suggest(test).set_index(test.index))
        groups = (race_category(test) + "|" + indication_group(test)).to_numpy()
        curves.append(adaptation_curve(model, test.reset_index(drop=True), groups, shots=shots))
        if progress:
            progress(f"fold {k + 1}/{folds} done ({time.monotonic() - start:.0f} s)")
    race = race_category(data).to_numpy()
    predictions = {"medmeta": pred, **baselines(data)}
    merged = {"y": np.concatenate([c["y"] for c in curves]), "race": np.concatenate([c["race"] for c in curves]),
              "predictions": {m: np.concatenate([c["predictions"][m] for c in curves if len(c["y"])])
                              for m in curves[0]["predictions"]},
              "groups_scored": {f"fold{i}:{g}": n for i, c in enumerate(curves) for g, n in c["groups_scored"].items()},
              "groups_too_small": {}}
    return {
        "protocol": f"patient-level {folds}-fold cross-validation (split seed {seed}); k = 0: every dosed patient "
                    "predicted by a model trained without them",
        "patients": len(data), "params": WarfarinDoseModel(**(params or {})).get_params(),
        "methods": score_table(y, predictions, race, n_boot=n_boot, seed=seed),
        "intervals": interval_coverage(y, pd.concat(suggestions).sort_index(), n_boot=n_boot, seed=seed),
        "adaptation_within_folds": _curve_table(merged, n_boot, seed),
        "seconds": round(time.monotonic() - start, 1),
    }


def held_out_groups(frame: pd.DataFrame, by: str = "race", params: dict[str, Any] | None = None, *,
                    shots: Sequence[int] = SHOTS, n_boot: int = 1000, seed: int = 0,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Leave each group out of training in turn (``by`` = ``"race"`` or ``"indication"``), then adapt to it."""
    data = dosed(frame)
    labels = (race_category(data) if by == "race" else indication_group(data)).to_numpy()
    results = {}
    start = time.monotonic()
    for group in sorted(set(labels)):
        model = WarfarinDoseModel(**(params or {})).fit(data[labels != group])
        test = data[labels == group].reset_index(drop=True)
        curve = adaptation_curve(model, test, np.full(len(test), group), shots=shots)
        results[str(group)] = _curve_table(curve, n_boot, seed)
        if progress:
            progress(f"held-out {by} {group} done ({time.monotonic() - start:.0f} s)")
    return {"protocol": f"leave one {by} out of training; adapt on k of its patients (random order, seed 0), "
                        f"score on its patients after the first {max(shots)}",
            "by": by, "groups": results, "seconds": round(time.monotonic() - start, 1)}


def evaluate(frame: pd.DataFrame, model: WarfarinDoseModel, *, shots: Sequence[int] = SHOTS, n_boot: int = 1000,
             seed: int = 0) -> dict[str, Any]:
    """Score a trained model and the baselines on the dosed patients of ``frame`` (none of them used for training).

    Also the interval coverage, and the adaptation curve per race (adapting on each race's first patients).
    """
    data = dosed(frame)
    if len(data) == 0:
        return {"patients_with_dose": 0, "methods": {}, "note": "no patient with a therapeutic dose to score"}
    y = data["dose_mg_week"].astype(float).to_numpy()
    race = race_category(data).to_numpy()
    s = model.suggest(data)
    predictions = {"medmeta": model.predict(data), **baselines(data)}
    curve = adaptation_curve(model, data, race, shots=shots)
    return {
        "patients": len(frame), "patients_with_dose": len(data),
        "methods": score_table(y, predictions, race, n_boot=n_boot, seed=seed),
        "intervals": interval_coverage(y, s, n_boot=n_boot, seed=seed),
        "adaptation_by_race": _curve_table(curve, n_boot, seed),
        "disclaimer": DISCLAIMER,
    }

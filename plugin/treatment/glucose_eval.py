"""Scoring glucose forecasts: medmeta against persistence, a population AR model and a per-subject AR model.

Every method is scored on the same forecast points: after each subject's adaptation window
(its first ``adapt_hours``), at one horizon, where the reading at that horizon exists. A subject
without enough readings in its adaptation window, or without any point to score, is reported in
``skipped`` with the reason and left out for every method.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from medmeta.datasets.cgm import CGMSeries
from medmeta.stats import bootstrap_ci
from medmeta.treatment.glucose import DISCLAIMER, ARForecaster, ForecastPoints, GlucoseForecaster, adaptation_split

METHODS = ("medmeta", "persistence", "population", "per_subject")
#: Alert thresholds (mg/dL): hypoglycaemia below, hyperglycaemia above.
HYPO, HYPER = 70.0, 180.0
#: Fewest adaptation points (one hour of 5-minute forecasts) to adapt or fit a per-subject model.
MIN_ADAPT_POINTS = 12


def clarke_zones(reference: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Clarke error grid zone (``"A"`` to ``"E"``) of each (reference, prediction) pair in mg/dL (Clarke 1987)."""
    r, p = np.asarray(reference, float), np.asarray(predicted, float)
    zone_a = ((r <= 70) & (p <= 70)) | ((p >= 0.8 * r) & (p <= 1.2 * r))
    zone_e = ((r >= 180) & (p <= 70)) | ((r <= 70) & (p >= 180))
    zone_c = (((r >= 70) & (r <= 290) & (p >= r + 110))
              | ((r >= 130) & (r <= 180) & (p <= 7 / 5 * r - 182)))
    zone_d = (((r >= 240) & (p >= 70) & (p <= 180))
              | ((r <= 175 / 3) & (p >= 70) & (p <= 180))
              | ((r >= 175 / 3) & (r <= 70) & (p >= 6 / 5 * r)))
    return np.select([zone_a, zone_e, zone_c, zone_d], ["A", "E", "C", "D"], default="B")


def _alert(y: np.ndarray, p: np.ndarray, event: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
    actual, alarm = event(y), event(p)
    hits = int(np.sum(actual & alarm))
    return {"events": int(actual.sum()), "alerts": int(alarm.sum()),
            "precision": round(hits / alarm.sum(), 4) if alarm.sum() else None,
            "recall": round(hits / actual.sum(), 4) if actual.sum() else None}


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((p - y) ** 2)))


def _mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(p - y)))


def scores(y: np.ndarray, p: np.ndarray, *, ci: bool = False, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """RMSE, MAE (mg/dL), Clarke zones A and A+B (%) and hypo/hyper alert precision and recall."""
    if len(y) == 0:
        return {"n": 0, "rmse": None, "mae": None, "clarke_a": None, "clarke_ab": None}
    zones = clarke_zones(y, p)
    out: dict[str, Any] = {
        "n": len(y), "rmse": round(float(_rmse(y, p)), 3), "mae": round(float(_mae(y, p)), 3),
        "clarke_a": round(float(100 * np.mean(zones == "A")), 2),
        "clarke_ab": round(float(100 * np.mean(np.isin(zones, ["A", "B"]))), 2),
        "hypo_alerts": _alert(y, p, lambda v: v < HYPO), "hyper_alerts": _alert(y, p, lambda v: v > HYPER),
    }
    if ci:
        for name, fn in (("rmse", _rmse), ("mae", _mae)):
            _, lo, hi = bootstrap_ci(fn, y, p, n_resamples=n_boot, seed=seed)
            out[f"{name}_ci95"] = [round(lo, 3), round(hi, 3)]
    return out


def subject_forecasts(model: GlucoseForecaster, points: ForecastPoints, *, adapt_hours: float, horizon: int,
                      population: ARForecaster) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    """Every method's forecasts on one subject's scored points, the actual readings, and what was used.

    Raises ``ValueError`` with the reason when the subject cannot be scored.
    """
    if len(points) == 0:
        raise ValueError("no complete hour of readings followed by a reading within the forecast horizons")
    adapt, scored = adaptation_split(points, points.origin[0], adapt_hours)
    j = points.horizons.index(horizon)
    scored &= ~np.isnan(points.targets[:, j])
    if adapt.sum() < MIN_ADAPT_POINTS:
        raise ValueError(f"only {int(adapt.sum())} forecast points in the first {adapt_hours:g} h "
                         f"(need {MIN_ADAPT_POINTS} to adapt)")
    if scored.sum() == 0:
        raise ValueError(f"no reading {horizon} min ahead after the first {adapt_hours:g} h")
    day, test = points.subset(adapt), points.subset(scored)
    own = ARForecaster().fit([day])
    if not own.fitted(horizon):
        raise ValueError(f"too few readings {horizon} min ahead in the first {adapt_hours:g} h to fit a "
                         "per-subject model")
    if not population.fitted(horizon):
        raise ValueError(f"the population model has no readings {horizon} min ahead to learn from")
    forecasts = {
        "medmeta": model.adapt(day).predict(test)[:, j],
        "persistence": test.lags[:, -1].astype(float),
        "population": population.predict(test)[:, population.horizons_.index(horizon)],
        "per_subject": own.predict(test)[:, j],
        "medmeta_not_adapted": model.predict(test)[:, j],
    }
    used = {"adaptation_points": int(adapt.sum()), "scored_points": int(scored.sum()),
            "first_scored": str(test.origin[0]), "last_scored": str(test.origin[-1])}
    return forecasts, test.targets[:, j], used


def evaluate(model: GlucoseForecaster, series: Mapping[str, CGMSeries], *, adapt_hours: float = 24.0,
             horizon: int = 30, population: ARForecaster | None = None, n_boot: int = 1000) -> dict[str, Any]:
    """Adapt ``model`` to each subject of ``series`` and score all methods on the same points.

    The population AR model is fitted leave-one-subject-out on the other subjects of ``series``; with
    a single usable subject, ``population`` (for example the one shipped with the model) is used instead.
    """
    if horizon not in model.horizons:
        raise ValueError(f"horizon {horizon} min is not one the model forecasts: {model.horizons}")
    points = {sid: model.points(s) for sid, s in series.items()}
    usable = [sid for sid, p in points.items() if len(p) > 0]
    source = "leave-one-subject-out on the other subjects of the input"
    if len(usable) < 2:
        if population is None:
            raise ValueError("a population model needs two subjects with data, or a fitted one")
        source = "the population AR model shipped with the medmeta model (fitted on its training subjects)"
    forecasts: dict[str, list[np.ndarray]] = {}
    actual, per_subject, skipped = [], {}, {}
    for sid, p in points.items():
        try:
            pop = population if len(usable) < 2 else ARForecaster().fit([points[o] for o in usable if o != sid])
            f, y, used = subject_forecasts(model, p, adapt_hours=adapt_hours, horizon=horizon, population=pop)
        except ValueError as exc:
            skipped[sid] = str(exc)
            continue
        actual.append(y)
        for name, values in f.items():
            forecasts.setdefault(name, []).append(values)
        per_subject[sid] = {**used, "methods": {name: scores(y, values) for name, values in f.items()}}
    y = np.concatenate(actual) if actual else np.empty(0)
    methods = {name: scores(y, np.concatenate(v), ci=True, n_boot=n_boot) for name, v in forecasts.items()}
    return {"horizon_minutes": horizon, "adapt_hours": adapt_hours, "subjects": len(series),
            "subjects_scored": len(per_subject), "skipped": skipped, "population_model": source,
            "methods": methods or {name: scores(y, y) for name in METHODS}, "per_subject": per_subject,
            "disclaimer": DISCLAIMER}


def leave_one_subject_out(series: Mapping[str, CGMSeries], params: dict[str, Any] | None = None, *,
                          adapt_hours: float = 24.0, horizons: tuple[int, ...] = (30, 60), n_boot: int = 1000,
                          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """For each subject: meta-train on all the others, adapt on its first day, score every method after it."""
    start = time.monotonic()
    results: dict[int, dict[str, Any]] = {h: {"forecasts": {}, "actual": [], "per_subject": {}, "skipped": {}}
                                          for h in horizons}
    for i, sid in enumerate(series):
        others = [s for o, s in series.items() if o != sid]
        model = GlucoseForecaster(**(params or {})).fit(others)
        points = model.points(series[sid])
        population = ARForecaster().fit([model.points(s) for s in others])
        for h in horizons:
            r = results[h]
            try:
                f, y, used = subject_forecasts(model, points, adapt_hours=adapt_hours, horizon=h,
                                               population=population)
            except ValueError as exc:
                r["skipped"][sid] = str(exc)
                continue
            r["actual"].append(y)
            for name, values in f.items():
                r["forecasts"].setdefault(name, []).append(values)
            r["per_subject"][sid] = {**used, "methods": {name: scores(y, v) for name, v in f.items()}}
        if progress:
            progress(f"subject {i + 1}/{len(series)} done ({time.monotonic() - start:.0f} s)")
    out = {}
    for h, r in results.items():
        y = np.concatenate(r["actual"])
        out[str(h)] = {"methods": {n: scores(y, np.concatenate(v), ci=True, n_boot=n_boot)
                                   for n, v in r["forecasts"].items()},
                       "per_subject": r["per_subject"], "skipped": r["skipped"]}
    return {"protocol": f"leave one subject out: meta-train on the others, adapt on the first {adapt_hours:g} h, "
                        "score every method on the same later points",
            "params": GlucoseForecaster(**(params or {})).get_params(), "horizons": out,
            "seconds": round(time.monotonic() - start, 1)}

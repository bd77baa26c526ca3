"""Per-subject glucose forecasting from CGM series: a MAML model adapted to each person from a day of readings.

Series in, not files in: everything takes :class:`~medmeta.datasets.cgm.CGMSeries` (from
``load_cgm`` today, from FHIR CGM Observations later).

- :func:`forecast_points` turns a series into forecast points: the last hour of readings on a
  5-minute grid (gaps up to ``max_gap_minutes`` bridged linearly), the time of day, and the
  readings 5, 10, ... 60 minutes later (NaN where there is none);
- :class:`ARForecaster` is the autoregressive baseline (one linear model per horizon on the lags),
  fitted on a population or on one subject;
- :class:`GlucoseForecaster` meta-trains one network over subjects (tasks: adapt on a day of one
  subject, forecast other times of the same subject), starting from persistence (the last reading),
  and adapts it to a new subject with :meth:`~GlucoseForecaster.adapt`.

Forecasts are decision support, not orders.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.lib.stride_tricks import sliding_window_view
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LinearRegression

import medmeta
from medmeta.datasets.cgm import CGMSeries
from medmeta.errors import DataError
from medmeta.learners.maml import MAML, AdaptedModel
from medmeta.learners.networks import WithLinearPrior, mlp
from medmeta.tasks import Task

STEP = pd.Timedelta(minutes=5)
#: Scaling of glucose for the network (mg/dL): z = (glucose - CENTRE) / SCALE.
CENTRE, SCALE = 120.0, 40.0
DISCLAIMER = ("Glucose forecasts are decision support, not orders: confirm with a fingerstick before acting. "
              "Research software, not for clinical use without review.")


@dataclass(frozen=True)
class ForecastPoints:
    """Forecast origins of one series: inputs known at the origin, readings at each horizon after it."""

    subject_id: str
    origin: pd.DatetimeIndex
    lags: np.ndarray  # (n, n_lags) mg/dL, oldest first; the last column is the reading at the origin
    clock: np.ndarray  # (n, 2) sin and cos of the time of day
    targets: np.ndarray  # (n, n_horizons) mg/dL, NaN where no reading
    horizons: tuple[int, ...]  # minutes

    def __len__(self) -> int:
        return len(self.origin)

    def subset(self, mask: np.ndarray) -> ForecastPoints:
        return ForecastPoints(self.subject_id, self.origin[mask], self.lags[mask], self.clock[mask],
                              self.targets[mask], self.horizons)

    def target(self, horizon: int) -> np.ndarray:
        return self.targets[:, self.horizons.index(horizon)]


def forecast_points(series: CGMSeries, *, n_lags: int = 12, horizons: Sequence[int] = tuple(range(5, 65, 5)),
                    max_gap_minutes: int = 15) -> ForecastPoints:
    """Every 5-minute origin with a reading and a complete input hour (short gaps bridged), in time order."""
    horizons = tuple(int(h) for h in horizons)
    if any(h % 5 or h <= 0 for h in horizons):
        raise ValueError(f"horizons must be positive multiples of 5 minutes, got {horizons}")
    empty = ForecastPoints(series.subject_id, pd.DatetimeIndex([]), np.empty((0, n_lags)), np.empty((0, 2)),
                           np.empty((0, len(horizons))), horizons)
    if len(series) < 2:
        return empty
    grid = series.regular(STEP)
    observed = grid.to_numpy(dtype=float)
    limit = max(0, max_gap_minutes // 5 - 1)
    bridged = grid.interpolate(limit=limit, limit_area="inside").to_numpy(dtype=float) if limit else observed
    steps = [h // 5 for h in horizons]
    n = len(observed) - max(steps)
    if n < n_lags:
        return empty
    windows = sliding_window_view(bridged[:n], n_lags)  # row j ends at grid index j + n_lags - 1
    ends = np.arange(n_lags - 1, n)
    ok = ~np.isnan(windows).any(axis=1) & ~np.isnan(observed[ends])
    targets = np.column_stack([observed[ends + s] for s in steps])
    ok &= ~np.isnan(targets).all(axis=1)
    origin = grid.index[ends[ok]]
    minutes = (origin.hour * 60 + origin.minute).to_numpy(dtype=float)
    angle = 2 * np.pi * minutes / 1440
    return ForecastPoints(series.subject_id, origin, windows[ok].copy(), np.column_stack([np.sin(angle),
                          np.cos(angle)]), targets[ok], horizons)


def latest_point(series: CGMSeries, *, n_lags: int = 12, horizons: Sequence[int] = tuple(range(5, 65, 5)),
                 max_gap_minutes: int = 15) -> ForecastPoints:
    """The forecast origin at the series' last reading (its future unknown): the hour of readings before it on
    a 5-minute grid ending at that reading (short gaps bridged), or no point when that hour is incomplete."""
    horizons = tuple(int(h) for h in horizons)
    empty = ForecastPoints(series.subject_id, pd.DatetimeIndex([]), np.empty((0, n_lags)), np.empty((0, 2)),
                           np.empty((0, len(horizons))), horizons)
    if len(series) == 0:
        return empty
    grid = pd.date_range(end=series.time[-1], periods=n_lags, freq=STEP)
    observed = pd.Series(series.glucose, index=series.time).reindex(grid, method="nearest", tolerance=STEP / 2)
    limit = max(0, max_gap_minutes // 5 - 1)
    window = (observed.interpolate(limit=limit, limit_area="inside") if limit else observed).to_numpy(dtype=float)
    if np.isnan(window).any():
        return empty
    origin = grid[-1:]
    angle = 2 * np.pi * (origin.hour * 60 + origin.minute).to_numpy(dtype=float) / 1440
    return ForecastPoints(series.subject_id, origin, window[None, :], np.column_stack([np.sin(angle), np.cos(angle)]),
                          np.full((1, len(horizons)), np.nan), horizons)


@dataclass(frozen=True)
class LatestForecast:
    """Glucose forecast from a subject's last reading, by a model adapted on the hours before it."""

    origin: pd.Timestamp
    horizons: tuple[int, ...]
    glucose: np.ndarray  # mg/dL per horizon
    low: np.ndarray  # band per horizon (``coverage``), from this subject's errors in the adaptation window
    high: np.ndarray
    coverage: float
    adaptation_points: int


def adaptation_split(points: ForecastPoints, start: pd.Timestamp, hours: float) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the points to adapt on (origin within ``hours`` of ``start``, target known by then as well)
    and of the points to forecast (origin at or after the end of that window)."""
    end = start + pd.Timedelta(hours=hours)
    horizon = pd.Timedelta(minutes=max(points.horizons))
    adapt = (points.origin + horizon < end) & (points.origin >= start)
    return np.asarray(adapt), np.asarray(points.origin >= end)


#: mg/dL per 5 minutes that counts as one unit of rate of change for the network.
RATE_SCALE = 5.0


def _inputs(points: ForecastPoints) -> np.ndarray:
    """The last reading (scaled), the changes between consecutive lags (newest first) and the time of day.

    Differences rather than raw lags keep the inputs far from collinear, which makes the trend easy to learn.
    """
    last = (points.lags[:, -1:] - CENTRE) / SCALE
    changes = np.diff(points.lags, axis=1)[:, ::-1] / RATE_SCALE
    return np.column_stack([last, changes, points.clock]).astype(np.float32)


class ARForecaster:
    """Autoregressive baseline: per horizon, a linear model of the change from the last reading on the lags.

    A horizon with too few known readings to fit (for example 5 minutes on 15-minute data) is left
    unfitted and forecast as NaN.
    """

    def fit(self, points: Sequence[ForecastPoints]) -> ARForecaster:
        lags = np.concatenate([p.lags for p in points])
        targets = np.concatenate([p.targets for p in points])
        self.horizons_ = points[0].horizons
        n_lags = lags.shape[1]
        self.coef_ = np.full((len(self.horizons_), n_lags), np.nan)
        self.intercept_ = np.full(len(self.horizons_), np.nan)
        for j in range(len(self.horizons_)):
            seen = ~np.isnan(targets[:, j])
            if seen.sum() > n_lags + 1:
                reg = LinearRegression().fit(lags[seen], targets[seen, j] - lags[seen, -1])
                self.coef_[j], self.intercept_[j] = reg.coef_, reg.intercept_
        return self

    def fitted(self, horizon: int) -> bool:
        return bool(np.isfinite(self.intercept_[self.horizons_.index(horizon)]))

    def predict(self, points: ForecastPoints) -> np.ndarray:
        """(n, n_horizons) mg/dL."""
        return points.lags[:, -1:] + points.lags @ self.coef_.T + self.intercept_

    def to_dict(self) -> dict[str, Any]:
        return {"horizons": list(self.horizons_), "coef": np.where(np.isnan(self.coef_), None, self.coef_).tolist(),
                "intercept": np.where(np.isnan(self.intercept_), None, self.intercept_).tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ARForecaster:
        ar = cls()
        ar.horizons_ = tuple(d["horizons"])
        ar.coef_ = np.array(d["coef"], dtype=float)
        ar.intercept_ = np.array(d["intercept"], dtype=float)
        return ar


class GlucoseForecaster:
    """Meta-learned glucose forecaster; see the module docstring.

    Each meta-training task is one subject: ``support_hours`` of its readings from a random start
    (the adaptation day) and ``query_size`` of its other forecast points. The network outputs the
    glucose at every horizon in ``horizons`` (minutes) and starts from persistence.
    """

    def __init__(self, *, n_lags: int = 12, horizons: Sequence[int] = tuple(range(5, 65, 5)),
                 hidden: Sequence[int] = (32, 32), inner_steps: int = 3, inner_lr: float = 0.01,
                 first_order: bool = False, adapt: Sequence[str] | None = None, meta_steps: int = 600,
                 meta_batch_size: int = 8, meta_lr: float = 3e-3, weight_decay: float = 0.0,
                 support_hours: float = 24.0, query_size: int = 256, max_gap_minutes: int = 15,
                 seed: int = 0) -> None:
        self.n_lags, self.horizons, self.hidden = n_lags, list(horizons), list(hidden)
        self.inner_steps, self.inner_lr, self.first_order = inner_steps, inner_lr, first_order
        self.adapt_prefixes = list(adapt) if adapt is not None else None
        self.meta_steps, self.meta_batch_size, self.meta_lr = meta_steps, meta_batch_size, meta_lr
        self.weight_decay, self.support_hours, self.query_size = weight_decay, support_hours, query_size
        self.max_gap_minutes, self.seed = max_gap_minutes, seed

    def get_params(self) -> dict[str, Any]:
        return {"n_lags": self.n_lags, "horizons": self.horizons, "hidden": self.hidden,
                "inner_steps": self.inner_steps, "inner_lr": self.inner_lr, "first_order": self.first_order,
                "adapt": self.adapt_prefixes, "meta_steps": self.meta_steps, "meta_batch_size": self.meta_batch_size,
                "meta_lr": self.meta_lr, "weight_decay": self.weight_decay, "support_hours": self.support_hours,
                "query_size": self.query_size, "max_gap_minutes": self.max_gap_minutes, "seed": self.seed}

    def points(self, series: CGMSeries) -> ForecastPoints:
        """Forecast points of a series with this model's lags, horizons and gap bridging."""
        return forecast_points(series, n_lags=self.n_lags, horizons=self.horizons,
                               max_gap_minutes=self.max_gap_minutes)

    def _network(self) -> torch.nn.Module:
        n_in, n_out = self.n_lags + 2, len(self.horizons)
        net = WithLinearPrior(mlp(n_in, n_out, self.hidden, zero_output=True), n_in, n_out)
        net.prior_weight[0, :] = 1.0  # persistence: every horizon starts at the last reading
        return net

    def _maml(self) -> MAML:
        torch.manual_seed(self.seed)
        return MAML(self._network(), loss="mse", inner_steps=self.inner_steps, inner_lr=self.inner_lr,
                    first_order=self.first_order, adapt=self.adapt_prefixes, meta_lr=self.meta_lr,
                    meta_batch_size=self.meta_batch_size, max_steps=self.meta_steps, weight_decay=self.weight_decay,
                    seed=self.seed)

    def subject_tasks(self, data: list[ForecastPoints]) -> Iterator[Task]:
        """Endless meta-training tasks (seeded by ``seed``): a subject, a day of it as support, other times as query."""
        rng = np.random.default_rng(self.seed)
        data = [p for p in data if len(p) > 0]
        while True:
            p = data[rng.integers(len(data))]
            start = p.origin[rng.integers(len(p))] - pd.Timedelta(hours=rng.uniform(0, self.support_hours))
            adapt, _ = adaptation_split(p, start, self.support_hours)
            window_end = start + pd.Timedelta(hours=self.support_hours)
            others = np.flatnonzero(~((p.origin >= start) & (p.origin < window_end)))
            if adapt.sum() == 0 or len(others) == 0:
                continue
            query = rng.choice(others, min(self.query_size, len(others)), replace=False)
            x = _inputs(p)
            z = ((p.targets - CENTRE) / SCALE).astype(np.float32)
            yield Task(x[adapt], z[adapt], x[query], z[query], {"subject": p.subject_id})

    def fit(self, series: Sequence[CGMSeries], *, show_progress: bool = False) -> GlucoseForecaster:
        """Meta-train on the subjects' series (each subject is a task)."""
        data = [self.points(s) for s in series]
        usable = [p for p in data if len(p) > 0]
        if not usable:
            raise DataError("no subject has a complete hour of readings to learn from", field="gl")
        self.maml_ = self._maml().meta_fit(self.subject_tasks(usable), show_progress=show_progress)
        self.training_ = {"subjects": len(usable), "points": int(sum(len(p) for p in usable)),
                          "steps": self.maml_.history_["steps"]}
        self.seconds_ = self.maml_.history_["seconds"]
        return self

    def _check(self) -> None:
        if not hasattr(self, "maml_"):
            raise RuntimeError("the model is not trained: call fit() or load it")

    def adapt(self, points: ForecastPoints, *, steps: int | None = None) -> AdaptedForecaster:
        """The model adapted on one subject's points (for example its first day); no points: not adapted."""
        self._check()
        z = ((points.targets - CENTRE) / SCALE).astype(np.float32)
        predictor = self.maml_.adapt(_inputs(points), z, steps=steps) if len(points) else self.maml_.initial()
        return AdaptedForecaster(predictor, tuple(self.horizons), len(points))

    def forecast_latest(self, series: CGMSeries, *, adapt_hours: float = 24.0, coverage: float = 0.8
                        ) -> LatestForecast | None:
        """Forecast every horizon from the series' last reading, adapting on the ``adapt_hours`` before it.

        The band holds the central ``coverage`` of the adapted model's errors on those hours (in-sample:
        it may be too narrow). None when the last hour of readings is incomplete.
        """
        self._check()
        latest = latest_point(series, n_lags=self.n_lags, horizons=self.horizons,
                              max_gap_minutes=self.max_gap_minutes)
        if not len(latest):
            return None
        points = self.points(series)
        last = series.time[-1]
        recent = points.subset(np.asarray((points.origin >= last - pd.Timedelta(hours=adapt_hours))
                                          & (points.origin + pd.Timedelta(minutes=max(self.horizons)) <= last)))
        adapted = self.adapt(recent)
        glucose = adapted.predict(latest)[0]
        if len(recent):
            errors = recent.targets - adapted.predict(recent)
            tail = (1 - coverage) / 2 * 100
            low, high = np.nanpercentile(errors, [tail, 100 - tail], axis=0)
        else:
            low = high = np.full(len(self.horizons), np.nan)
        return LatestForecast(latest.origin[0], tuple(self.horizons), glucose, glucose + low, glucose + high,
                              coverage, len(recent))

    def predict(self, points: ForecastPoints) -> np.ndarray:
        """(n, n_horizons) mg/dL from the meta-learned model, not adapted."""
        self._check()
        return AdaptedForecaster(self.maml_.initial(), tuple(self.horizons), 0).predict(points)

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """``config.json`` (settings, training summary, ``extra``) and ``model.safetensors``."""
        self._check()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.maml_.state_dict().items()},
                  directory / "model.safetensors")
        config = {"model": "GlucoseForecaster", "medmeta_version": medmeta.__version__, "params": self.get_params(),
                  "scaling_mg_dl": {"centre": CENTRE, "scale": SCALE}, "training": self.training_, **(extra or {})}
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> GlucoseForecaster:
        """Rebuild a model written by :meth:`save` (weights from safetensors: no code is loaded)."""
        directory = Path(directory)
        try:
            config = json.loads((directory / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the model config ({exc})", source=directory / "config.json") from exc
        if config.get("model") != "GlucoseForecaster":
            raise DataError(f"not a glucose forecaster ({config.get('model')!r})", source=directory / "config.json")
        model = cls(**config["params"])
        model.maml_ = model._maml()
        model.maml_.load_state_dict(load_file(directory / "model.safetensors"))
        model.training_, model.config_ = config.get("training", {}), config
        return model


def adaptation_curve(model: GlucoseForecaster, series: CGMSeries, *, hours: Sequence[float] = (0, 2, 4, 8, 12, 24),
                     horizon: int = 30, window_hours: float = 24.0) -> pd.DataFrame:
    """How the forecast error falls as the model adapts to a subject: for each amount of the subject's first
    readings adapted on (0 h: not adapted), the MAE and RMSE ``horizon`` minutes ahead on the same later points
    (the ``window_hours`` after the longest adaptation period)."""
    points = model.points(series)
    if not len(points):
        return pd.DataFrame(columns=["hours", "mae", "rmse", "n"])
    start, longest = points.origin[0], max(hours)
    end = start + pd.Timedelta(hours=longest)
    j = points.horizons.index(horizon)
    later = (points.origin >= end) & (points.origin < end + pd.Timedelta(hours=window_hours))
    test = points.subset(np.asarray(later) & ~np.isnan(points.targets[:, j]))
    rows = []
    for h in hours:
        adapt, _ = adaptation_split(points, start, h)
        err = model.adapt(points.subset(adapt)).predict(test)[:, j] - test.targets[:, j] if len(test) else np.empty(0)
        rows.append({"hours": h, "mae": float(np.mean(np.abs(err))) if len(err) else np.nan,
                     "rmse": float(np.sqrt(np.mean(err**2))) if len(err) else np.nan, "n": len(err)})
    return pd.DataFrame(rows)


class AdaptedForecaster:
    """A forecaster adapted to one subject (``n_adapt`` points; 0: the population model)."""

    def __init__(self, predictor: AdaptedModel, horizons: tuple[int, ...], n_adapt: int) -> None:
        self.predictor, self.horizons, self.n_adapt = predictor, horizons, n_adapt

    def predict(self, points: ForecastPoints) -> np.ndarray:
        """(n, n_horizons) mg/dL."""
        if len(points) == 0:
            return np.empty((0, len(self.horizons)))
        return self.predictor.predict(_inputs(points)).astype(float) * SCALE + CENTRE

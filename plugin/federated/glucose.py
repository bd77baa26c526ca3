"""Federated glucose forecasting: each client is a patient's device holding that patient's CGM series.

Statistics: the sufficient statistics of the population autoregressive baseline (per horizon, the
cross-products of the lags and the change to predict), so the server fits exactly the least-squares
AR model that ``medmeta cgm train`` fits on pooled data. Training: each client meta-trains the
:class:`~medmeta.treatment.glucose.GlucoseForecaster` network on tasks from its own series (adapt on a
day, forecast other times), weighted by its number of subjects (central training samples subjects
uniformly). The saved model is a ``GlucoseForecaster`` folder: ``medmeta cgm eval --model DIR`` scores it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medmeta.datasets.cgm import CGMSeries
from medmeta.errors import DataError
from medmeta.federated.task import FederatedTask, State, Sums, load_trainable, local_meta_update, trainable_state
from medmeta.treatment.glucose import CENTRE, SCALE, ARForecaster, ForecastPoints, GlucoseForecaster


def ar_sums(points: list[ForecastPoints]) -> dict[str, np.ndarray]:
    """Per horizon: ``D'D`` and ``D'y`` of the design ``D = [(lags - CENTRE) / SCALE, 1]`` and the change
    ``y`` from the last reading, over the points where that horizon's reading exists, and their number."""
    n_h = points[0].targets.shape[1]
    k = points[0].lags.shape[1] + 1
    out = {"ar_dd": np.zeros((n_h, k, k)), "ar_dy": np.zeros((n_h, k)), "ar_n": np.zeros(n_h)}
    for p in points:
        design = np.column_stack([(p.lags - CENTRE) / SCALE, np.ones(len(p))])
        change = p.targets - p.lags[:, -1:]
        for j in range(n_h):
            seen = ~np.isnan(change[:, j])
            d = design[seen]
            out["ar_dd"][j] += d.T @ d
            out["ar_dy"][j] += d.T @ change[seen, j]
            out["ar_n"][j] += seen.sum()
    return out


def ar_from_sums(sums: dict[str, np.ndarray], horizons: tuple[int, ...]) -> ARForecaster:
    """The least-squares AR model of :class:`ARForecaster` from :func:`ar_sums` added over clients."""
    n_h, k, _ = sums["ar_dd"].shape
    coef, intercept = np.full((n_h, k - 1), np.nan), np.full(n_h, np.nan)
    for j in range(n_h):
        if sums["ar_n"][j] > k:  # as ARForecaster: more known readings than lags + 1
            w = np.linalg.lstsq(sums["ar_dd"][j], sums["ar_dy"][j], rcond=None)[0]
            coef[j] = w[:-1] / SCALE
            intercept[j] = w[-1] - w[:-1].sum() * CENTRE / SCALE
    ar = ARForecaster()
    ar.horizons_, ar.coef_, ar.intercept_ = tuple(horizons), coef, intercept
    return ar


class FederatedGlucose(FederatedTask):
    """The glucose forecaster, one client per CGM subject."""

    name = "cgm"

    def _forecaster(self, setup: dict[str, Any] | None = None, seed: int | None = None) -> GlucoseForecaster:
        params = dict(setup["params"]) if setup else {"seed": self.settings.seed}
        if seed is not None:
            params["seed"] = seed
        return GlucoseForecaster(**params)

    def _points(self, data: list[CGMSeries], model: GlucoseForecaster) -> list[ForecastPoints]:
        points = [p for p in (model.points(s) for s in data) if len(p)]
        if not points:
            raise DataError("no subject of this client has a complete hour of readings to learn from", field="gl")
        return points

    def statistics(self, data: list[CGMSeries]) -> Sums:
        points = self._points(data, self._forecaster())
        return Sums({**ar_sums(points), "subjects": np.array(len(points)),
                     "points": np.array(sum(len(p) for p in points))})

    def train(self, data: list[CGMSeries], setup: dict[str, Any], state: State, round_: int) -> tuple[State, float,
                                                                                                        float]:
        seed = self.settings.seed_for(round_)
        model = self._forecaster(setup, seed)
        points = self._points(data, model)
        maml = model._maml()
        load_trainable(maml, state)
        loss = local_meta_update(maml, model.subject_tasks(points), self.settings.local_steps, seed)
        return trainable_state(maml), float(len(points)), loss

    def setup(self, sums: Sums) -> tuple[dict[str, Any], State]:
        params = self._forecaster().get_params()
        params["meta_steps"] = self.settings.rounds * self.settings.local_steps
        ar = ar_from_sums(sums.arrays, tuple(params["horizons"]))
        setup = {"params": params, "population_ar": ar.to_dict(), "subjects": int(sums.arrays["subjects"]),
                 "points": int(sums.arrays["points"])}
        return setup, trainable_state(self._forecaster(setup)._maml())

    def model(self, setup: dict[str, Any], state: State) -> GlucoseForecaster:
        model = self._forecaster(setup)
        model.maml_ = model._maml()
        load_trainable(model.maml_, state)
        return model

    def save(self, setup: dict[str, Any], state: State, calibration: Sums, report: dict[str, Any],
             output: str | Path) -> Path:
        model = self.model(setup, state)
        model.training_ = {"subjects": setup["subjects"], "points": setup["points"],
                           "steps": self.settings.rounds * self.settings.local_steps}
        return model.save(output, extra={"population_ar": setup["population_ar"], "federated": report})

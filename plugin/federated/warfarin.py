"""Federated warfarin dosing: each client is a hospital holding its own patients (one patient group each here).

Statistics: per feature, the number of known values, their sum and sum of squares, and the same for the
square-root dose, from which the server computes the feature and target scaling that
:meth:`~medmeta.treatment.warfarin.WarfarinDoseModel.fit` computes on pooled data. Training: every member
of the ensemble is meta-trained on each client's race x indication tasks, on the client's patients outside
that member's fold (folds are drawn by each client), weighted by patients. Calibration: each member predicts
its own fold's patients (never seen by that member anywhere), and clients send a histogram of the log
residuals, summed absolute errors and counts of categorical value patterns; the server derives the
conformal intervals (rounded outwards to the histogram's bins, 0.005 on the log scale), the out-of-fold MAE
and the reference patient. The saved model is a ``WarfarinDoseModel`` folder: ``medmeta warfarin eval
--model DIR`` scores it.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medmeta.errors import DataError
from medmeta.federated.task import FederatedTask, State, Sums, load_trainable, local_meta_update, trainable_state
from medmeta.treatment.warfarin import WarfarinDoseModel
from medmeta.treatment.warfarin_features import patient_groups, warfarin_features

#: Bin edges of the log(actual / predicted) residual histogram (values beyond are counted in the end bins).
EDGES = np.linspace(-6.0, 6.0, 2401)


def histogram_conformal(counts: np.ndarray, edges: np.ndarray, coverage: float) -> list[float]:
    """Split-conformal bounds of :func:`medmeta.stats.conformal_bounds` from a histogram of the residuals:
    the same order statistics, each replaced by the outer edge of its bin (never narrower)."""
    n = int(counts.sum())
    tail = (1 - coverage) / 2
    low = math.floor(max(0.0, math.floor(tail * (n + 1)) / n) * (n - 1))
    high = math.ceil(min(1.0, math.ceil((1 - tail) * (n + 1)) / n) * (n - 1))
    cumulative = np.cumsum(counts)
    lo_bin, hi_bin = np.searchsorted(cumulative, [low, high], side="right")
    return [float(edges[lo_bin]), float(edges[hi_bin + 1])]


def _pattern_key(pattern: tuple[float, ...]) -> str:
    return ",".join(repr(v) for v in pattern)


class FederatedWarfarin(FederatedTask):
    """The warfarin dose ensemble, one client per hospital (here: per race or indication group)."""

    name = "warfarin"

    def _model(self, setup: dict[str, Any]) -> WarfarinDoseModel:
        """A model with the federation's scaling and freshly initialised members (as ``fit`` initialises them)."""
        m = WarfarinDoseModel(**setup["params"])
        m.feature_names_, m.feature_factors_ = list(setup["names"]), list(setup["factors"])
        m.mean_, m.scale_ = np.asarray(setup["mean"]), np.asarray(setup["scale"])
        m.target_mean_, m.target_scale_ = setup["target_mean"], setup["target_scale"]
        m.members_ = []
        for i in range(m.members):
            torch.manual_seed(m.seed * 1000 + i)
            m.members_.append(m._maml(m._network(), seed=m.seed * 1000 + i))
        return m

    def _check(self, data: pd.DataFrame) -> None:
        need = 2 * WarfarinDoseModel().members
        if len(data) < need:
            raise DataError(f"this client has {len(data)} patients with a dose; it needs {need} to take part",
                            field="dose_mg_week")

    def _folds(self, n: int, members: int) -> np.ndarray:
        """Each patient's ensemble fold, drawn by the client (the same in every round)."""
        return np.random.default_rng([self.settings.seed, n]).permutation(n) % members

    @staticmethod
    def _dose(data: pd.DataFrame) -> np.ndarray:
        return data["dose_mg_week"].astype(float).to_numpy()

    # -- client side ---------------------------------------------------------------------------
    def statistics(self, data: pd.DataFrame) -> Sums:
        self._check(data)
        values = warfarin_features(data).values
        root = np.sqrt(self._dose(data))
        return Sums({"patients": np.array(len(data)), "feature_count": (~np.isnan(values)).sum(0),
                     "feature_sum": np.nansum(values, 0), "feature_sumsq": np.nansum(values**2, 0),
                     "root_sum": np.array(root.sum()), "root_sumsq": np.array((root**2).sum())})

    def _client_model(self, data: pd.DataFrame, setup: dict[str, Any], state: State) -> WarfarinDoseModel:
        self._check(data)
        m = self._model(setup)
        if list(warfarin_features(data.head(0)).names) != m.feature_names_:
            raise DataError("this client's medmeta computes other features than the server's: update medmeta")
        for i, maml in enumerate(m.members_):
            load_trainable(maml, state, f"member{i}.")
        return m

    def train(self, data: pd.DataFrame, setup: dict[str, Any], state: State, round_: int) -> tuple[State, float,
                                                                                                     float]:
        m = self._client_model(data, setup, state)
        x, z, groups = m._matrix(data), m._target(self._dose(data)), patient_groups(data).to_numpy()
        fold = self._folds(len(data), m.members)
        losses, new = [], {}
        for i, maml in enumerate(m.members_):
            seed = self.settings.seed_for(round_, i)
            own = fold != i
            tasks = m.group_tasks(x[own], z[own], groups[own], seed=seed)
            losses.append(local_meta_update(maml, tasks, self.settings.local_steps, seed))
            new.update(trainable_state(maml, f"member{i}."))
        return new, float(len(data)), float(np.mean(losses))

    def calibration(self, data: pd.DataFrame, setup: dict[str, Any], state: State) -> Sums:
        m = self._client_model(data, setup, state)
        x, dose = m._matrix(data), self._dose(data)
        fold = self._folds(len(data), m.members)
        oof = np.empty(len(data))
        for i, maml in enumerate(m.members_):
            oof[fold == i] = maml.predict(x[fold == i])[:, 0]
        predicted = m._to_dose(oof)
        residual = np.clip(np.log(dose) - np.log(predicted), EDGES[0], EDGES[-1])
        counts = {f: Counter({_pattern_key(p): c for p, c in patterns.items()})
                  for f, patterns in m.pattern_counts(x).items()}
        return Sums({"residual_histogram": np.histogram(residual, EDGES)[0], "patients": np.array(len(data)),
                     "abs_error_sum": np.array(np.abs(predicted - dose).sum()),
                     "groups": np.array(patient_groups(data).nunique())}, counts)

    # -- server side ---------------------------------------------------------------------------
    def setup(self, sums: Sums) -> tuple[dict[str, Any], State]:
        a = sums.arrays
        features = warfarin_features(pd.DataFrame())
        known = a["feature_count"]
        mean = np.where(known > 0, a["feature_sum"] / np.maximum(known, 1), 0.0)
        var = np.where(known > 0, a["feature_sumsq"] / np.maximum(known, 1) - mean**2, 0.0)
        var = np.where(var > 1e-12 * np.maximum(1.0, mean**2), var, 0.0)  # rounding, not spread
        n = float(a["patients"])
        target_mean = float(a["root_sum"]) / n
        params = WarfarinDoseModel(seed=self.settings.seed).get_params()
        params["meta_steps"] = self.settings.rounds * self.settings.local_steps
        setup = {"params": params, "names": list(features.names), "factors": list(features.factors),
                 "mean": mean.tolist(), "scale": np.where(var > 0, np.sqrt(var), 1.0).tolist(),
                 "target_mean": target_mean, "target_scale": math.sqrt(float(a["root_sumsq"]) / n - target_mean**2),
                 "patients": int(n)}
        return setup, self._state(self._model(setup))

    @staticmethod
    def _state(m: WarfarinDoseModel) -> State:
        return {k: v for i, maml in enumerate(m.members_) for k, v in trainable_state(maml, f"member{i}.").items()}

    def model(self, setup: dict[str, Any], state: State) -> WarfarinDoseModel:
        m = self._model(setup)
        for i, maml in enumerate(m.members_):
            load_trainable(maml, state, f"member{i}.")
        return m

    def save(self, setup: dict[str, Any], state: State, calibration: Sums, report: dict[str, Any],
             output: str | Path) -> Path:
        a = calibration.arrays
        if "residual_histogram" not in a:
            raise DataError("no client returned calibration statistics: the prediction intervals cannot be set")
        m = self.model(setup, state)
        m.intervals_ = {str(c): histogram_conformal(a["residual_histogram"], EDGES, c) for c in m.coverage}
        m.reference_ = m.reference_from_counts({f: {tuple(float(v) for v in k.split(",")): c for k, c in cs.items()}
                                                for f, cs in calibration.counts.items()})
        m.calibration_ = []  # the per-decile table needs the pooled deciles of the predictions: not computed here
        m.training_ = {"patients": setup["patients"], "groups": int(a["groups"]), "source": None,
                       "out_of_fold_mae": float(a["abs_error_sum"]) / float(a["patients"])}
        return m.save(output, extra={"federated": report})

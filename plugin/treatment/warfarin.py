"""Warfarin weekly dose from genotype and clinical records: a MAML ensemble that adapts to a patient group.

:class:`WarfarinDoseModel` is a scikit-learn-like estimator over the typed IWPC frame
(``medmeta.datasets.warfarin.load_iwpc`` or the FHIR adapters' frame with the same columns):

- :meth:`~WarfarinDoseModel.fit` meta-trains ``members`` networks, each on all but one fold of the
  patients, over tasks that are patient groups (race x indication): adapt on ``k`` patients of a
  group, be judged on others of the same group (``k = 0`` included, so the initial model is a good
  population model too). Each member's predictions on the fold it did not see calibrate
  split-conformal prediction intervals;
- :meth:`~WarfarinDoseModel.predict` gives the ensemble's dose in mg/week;
- :meth:`~WarfarinDoseModel.adapt` returns the model adapted to a group from its first patients;
- :meth:`~WarfarinDoseModel.suggest` returns one row per patient: dose, 80% and 90% intervals, the
  factors that moved the dose most, and the IWPC pharmacogenetic dose beside it.

Suggestions are decision support for a clinician, not orders.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

import medmeta
from medmeta.errors import DataError
from medmeta.learners.maml import MAML, AdaptedModel
from medmeta.learners.networks import WithLinearPrior, mlp
from medmeta.stats import conformal_bounds
from medmeta.tasks import Task
from medmeta.treatment.iwpc import CLINICAL, PHARMACOGENETIC, impute_vkorc1, iwpc_pharmacogenetic_dose
from medmeta.treatment.warfarin_features import (
    CONTINUOUS_FACTORS,
    FACTOR_COLUMNS,
    describe_factor,
    patient_groups,
    warfarin_features,
)

DISCLAIMER = ("Decision support for a clinician, not an order: the suggested starting dose must be reviewed and "
              "the INR monitored. Research software, not for clinical use without review.")
#: Linear dosing formulas the network may start from and learn a correction to (``prior`` setting).
PRIORS = {"iwpc_pharmacogenetic": PHARMACOGENETIC, "iwpc_clinical": CLINICAL}
#: Smallest weekly dose the model suggests (mg); the IWPC data go down to 2.1 mg/week.
MIN_DOSE = 1.0


class WarfarinDoseModel:
    """Meta-learned warfarin dose model; see the module docstring.

    ``hidden`` are the hidden layer sizes of each member network (``()``: linear); the MAML
    settings (``inner_steps``, ``inner_lr``, ``meta_steps``...) are those of :class:`~medmeta.learners.MAML`.
    ``shots`` are the support sizes of the meta-training tasks; ``coverage`` the interval levels.
    ``prior`` names a formula of :data:`PRIORS` that each network starts from (it learns a correction
    to it, on the sqrt-dose scale), or ``None`` to learn from scratch.
    """

    def __init__(self, *, hidden: Sequence[int] = (32,), prior: str | None = "iwpc_pharmacogenetic", members: int = 5,
                 inner_steps: int = 1, inner_lr: float = 0.01, first_order: bool = False, meta_steps: int = 300,
                 meta_batch_size: int = 16, meta_lr: float = 3e-3, weight_decay: float = 1e-2,
                 shots: Sequence[int] = (0, 5, 10, 20, 50), query_size: int = 64, loss: str = "l1",
                 coverage: Sequence[float] = (0.8, 0.9), top_factors: int = 3, seed: int = 0) -> None:
        if members < 2:
            raise ValueError("members must be >= 2: each member's held-out fold calibrates the intervals")
        if prior is not None and prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; expected one of {sorted(PRIORS)} or None")
        self.prior = prior
        self.hidden, self.members, self.inner_steps, self.inner_lr = list(hidden), members, inner_steps, inner_lr
        self.first_order, self.meta_steps, self.meta_batch_size, self.meta_lr = (first_order, meta_steps,
                                                                                 meta_batch_size, meta_lr)
        self.weight_decay, self.shots, self.query_size, self.loss = weight_decay, list(shots), query_size, loss
        self.coverage, self.top_factors, self.seed = list(coverage), top_factors, seed

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("hidden", "prior", "members", "inner_steps", "inner_lr", "first_order",
                                              "meta_steps", "meta_batch_size", "meta_lr", "weight_decay", "shots",
                                              "query_size", "loss", "coverage", "top_factors", "seed")}

    # -- features and targets ----------------------------------------------------------------------
    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """Standardised features (missing numbers -> the training mean, flagged by their ``*_missing`` column)."""
        f = warfarin_features(frame)
        x = np.where(np.isnan(f.values), self.mean_, f.values)
        return ((x - self.mean_) / self.scale_).astype(np.float32)

    def _to_dose(self, z: np.ndarray) -> np.ndarray:
        root = np.maximum(z * self.target_scale_ + self.target_mean_, np.sqrt(MIN_DOSE))
        return root**2

    def _target(self, dose: np.ndarray) -> np.ndarray:
        return ((np.sqrt(dose) - self.target_mean_) / self.target_scale_).astype(np.float32)

    def _network(self) -> torch.nn.Module:
        n = len(self.feature_names_)
        net = WithLinearPrior(mlp(n, 1, self.hidden, zero_output=self.prior is not None), n, 1)
        if self.prior is not None:  # the formula on raw features, rewritten for standardised features and target
            coef = PRIORS[self.prior]
            w = np.array([coef.get(name, 0.0) for name in self.feature_names_])
            net.prior_weight[:, 0] = torch.as_tensor(w * self.scale_ / self.target_scale_)
            net.prior_bias[0] = (coef["intercept"] + w @ self.mean_ - self.target_mean_) / self.target_scale_
        return net

    def _maml(self, network: torch.nn.Module, seed: int) -> MAML:
        return MAML(network, loss=self.loss, inner_steps=self.inner_steps, inner_lr=self.inner_lr,
                    first_order=self.first_order, meta_lr=self.meta_lr, meta_batch_size=self.meta_batch_size,
                    max_steps=self.meta_steps, weight_decay=self.weight_decay, seed=seed)

    # -- training ----------------------------------------------------------------------------------
    def group_tasks(self, x: np.ndarray, z: np.ndarray, groups: np.ndarray, seed: int):
        """Endless meta-training tasks: a group, ``k`` of its patients as support, others as query."""
        rng = np.random.default_rng(seed)
        members = {g: np.flatnonzero(groups == g) for g in np.unique(groups)}
        members = {g: idx for g, idx in members.items() if len(idx) >= 2}
        names = sorted(members)
        weight = np.array([len(members[g]) for g in names], dtype=float)
        weight /= weight.sum()  # groups in proportion to their patients
        while True:
            idx = rng.permutation(members[names[rng.choice(len(names), p=weight)]])
            k = min(int(rng.choice(self.shots)), len(idx) - 1)
            support, query = idx[:k], idx[k:k + self.query_size]
            yield Task(x[support], z[support, None], x[query], z[query, None])

    def fit(self, frame: pd.DataFrame, *, show_progress: bool = False) -> WarfarinDoseModel:
        """Meta-train on the patients of ``frame`` that have a therapeutic dose (others are ignored)."""
        dosed = frame[pd.to_numeric(frame["dose_mg_week"], errors="coerce") > 0].reset_index(drop=True)
        if len(dosed) < 10 * self.members:
            raise DataError(f"{len(dosed)} patients with a dose; need at least {10 * self.members} to train",
                            source=frame.attrs.get("source"), field="dose_mg_week")
        feats = warfarin_features(dosed)
        self.feature_names_, self.feature_factors_ = list(feats.names), list(feats.factors)
        self.mean_ = np.nanmean(feats.values, axis=0)
        self.mean_ = np.where(np.isnan(self.mean_), 0.0, self.mean_)
        scale = np.nanstd(feats.values, axis=0)
        self.scale_ = np.where((scale > 0) & ~np.isnan(scale), scale, 1.0)
        dose = dosed["dose_mg_week"].astype(float).to_numpy()
        self.target_mean_, self.target_scale_ = float(np.sqrt(dose).mean()), float(np.sqrt(dose).std())
        x, z = self._matrix(dosed), self._target(dose)
        groups = patient_groups(dosed).to_numpy()
        self.reference_ = self._reference(x)

        fold = np.random.default_rng(self.seed).permutation(len(dosed)) % self.members
        self.members_: list[MAML] = []
        oof = np.empty(len(dosed))
        for m in range(self.members):
            train = fold != m
            torch.manual_seed(self.seed * 1000 + m)
            maml = self._maml(self._network(), seed=self.seed * 1000 + m)
            maml.meta_fit(self.group_tasks(x[train], z[train], groups[train], seed=self.seed * 1000 + m),
                          show_progress=show_progress)
            self.members_.append(maml)
            oof[~train] = maml.predict(x[~train])[:, 0]
        residual = np.log(dose) - np.log(self._to_dose(oof))
        self.intervals_ = {str(c): conformal_bounds(residual, c) for c in self.coverage}
        self.calibration_ = _calibration(self._to_dose(oof), dose, residual, self.intervals_)
        self.training_ = {"patients": len(dosed), "groups": len(np.unique(groups)),
                          "source": Path(frame.attrs["source"]).name if frame.attrs.get("source") else None,
                          "out_of_fold_mae": float(np.mean(np.abs(self._to_dose(oof) - dose)))}
        return self

    def _reference(self, x: np.ndarray) -> np.ndarray:
        """A typical patient: population mean of scaled factors, the most common value of the others."""
        return self.reference_from_counts(self.pattern_counts(x))

    def pattern_counts(self, x: np.ndarray) -> dict[str, dict[tuple[float, ...], int]]:
        """How many patients of standardised features ``x`` show each value pattern of each categorical factor.

        Counts add up across data sets, so a federated client can send them instead of its patients.
        """
        factors = np.asarray(self.feature_factors_)
        counts = {}
        for factor in dict.fromkeys(self.feature_factors_):
            if factor not in CONTINUOUS_FACTORS:
                patterns, n = np.unique(x[:, factors == factor].round(6), axis=0, return_counts=True)
                counts[factor] = {tuple(float(v) for v in p): int(c) for p, c in zip(patterns, n, strict=True)}
        return counts

    def reference_from_counts(self, counts: dict[str, dict[tuple[float, ...], int]]) -> np.ndarray:
        """The typical patient from :meth:`pattern_counts`: continuous factors at their mean (and not missing),
        the others at their most common pattern (the smallest one on ties)."""
        ref = np.zeros(len(self.feature_names_), dtype=np.float32)
        factors = np.asarray(self.feature_factors_)
        for factor in dict.fromkeys(self.feature_factors_):
            cols = np.flatnonzero(factors == factor)
            if factor in CONTINUOUS_FACTORS:
                missing = [c for c in cols if self.feature_names_[c].endswith("_missing")]
                ref[missing] = (0 - self.mean_[missing]) / self.scale_[missing]
            else:
                ref[cols] = max(sorted(counts[factor]), key=counts[factor].__getitem__)
        return ref

    # -- prediction --------------------------------------------------------------------------------
    def _check(self) -> None:
        if not hasattr(self, "members_"):
            raise RuntimeError("the model is not trained: call fit() or load it")

    def _predict_z(self, x: np.ndarray, predictors: Sequence[AdaptedModel]) -> np.ndarray:
        return np.mean([p.predict(x)[:, 0] for p in predictors], axis=0)

    def _predictors(self, support: pd.DataFrame | None, steps: int | None = None) -> list[AdaptedModel]:
        self._check()
        if support is None or len(support) == 0:
            return [m.initial() for m in self.members_]
        dose = pd.to_numeric(support["dose_mg_week"], errors="coerce").astype(float).to_numpy()
        keep = dose > 0
        sx, sz = self._matrix(support[keep]), self._target(dose[keep])[:, None]
        return [m.adapt(sx, sz, steps=steps) for m in self.members_]

    def predict(self, frame: pd.DataFrame, *, support: pd.DataFrame | None = None) -> np.ndarray:
        """Weekly dose (mg) per patient; adapted first on ``support`` (dosed patients of the same group) if given."""
        return self._to_dose(self._predict_z(self._matrix(frame), self._predictors(support)))

    def adapt(self, support: pd.DataFrame, *, steps: int | None = None) -> AdaptedWarfarinModel:
        """The model adapted to a patient group from some of its dosed patients (rows without a dose are skipped)."""
        return AdaptedWarfarinModel(self, self._predictors(support, steps), n_support=len(support))

    def suggest(self, frame: pd.DataFrame, *, support: pd.DataFrame | None = None) -> pd.DataFrame:
        """One suggestion per patient (see :meth:`AdaptedWarfarinModel.suggest`)."""
        predictors = self._predictors(support)
        return AdaptedWarfarinModel(self, predictors, 0 if support is None else len(support)).suggest(frame)

    # -- persistence -------------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """``config.json`` (settings, feature scaling, intervals, training summary, ``extra``) and
        ``model.safetensors``."""
        self._check()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"member{i}.{k}": v.detach().contiguous()
                   for i, m in enumerate(self.members_) for k, v in m.state_dict().items()}
        save_file(tensors, directory / "model.safetensors")
        config = {
            "model": "WarfarinDoseModel", "medmeta_version": medmeta.__version__, "params": self.get_params(),
            "features": {"names": self.feature_names_, "factors": self.feature_factors_, "mean": self.mean_.tolist(),
                         "scale": self.scale_.tolist(), "reference": self.reference_.tolist()},
            "target": {"transform": "sqrt(mg/week)", "mean": self.target_mean_, "scale": self.target_scale_},
            "intervals_log_residual": self.intervals_, "training": self.training_,
            "calibration_out_of_fold": self.calibration_, **(extra or {}),
        }
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> WarfarinDoseModel:
        """Rebuild a model written by :meth:`save` (weights from safetensors: no code is loaded)."""
        directory = Path(directory)
        try:
            config = json.loads((directory / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the model config ({exc})", source=directory / "config.json") from exc
        if config.get("model") != "WarfarinDoseModel":
            raise DataError(f"not a warfarin dose model ({config.get('model')!r})", source=directory / "config.json")
        model = cls(**config["params"])
        feats = config["features"]
        model.feature_names_, model.feature_factors_ = feats["names"], feats["factors"]
        model.mean_, model.scale_ = np.asarray(feats["mean"]), np.asarray(feats["scale"])
        model.reference_ = np.asarray(feats["reference"], dtype=np.float32)
        model.target_mean_, model.target_scale_ = config["target"]["mean"], config["target"]["scale"]
        model.intervals_, model.training_ = config["intervals_log_residual"], config["training"]
        model.calibration_ = config.get("calibration_out_of_fold", [])
        tensors = load_file(directory / "model.safetensors")
        model.members_ = []
        for i in range(model.members):
            maml = model._maml(model._network(), seed=i)
            prefix = f"member{i}."
            maml.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            model.members_.append(maml)
        return model


def _calibration(predicted: np.ndarray, actual: np.ndarray, residual: np.ndarray,
                 intervals: dict[str, list[float]], bins: int = 10) -> list[dict[str, float]]:
    """Out-of-fold calibration by decile of the predicted dose: mean predicted and actual dose, and how often
    the actual dose fell in each prediction interval."""
    edges = np.quantile(predicted, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        row = {"predicted_mg_week": round(float(predicted[m].mean()), 2),
               "actual_mg_week": round(float(actual[m].mean()), 2), "n": int(m.sum())}
        for level, (lo, hi) in intervals.items():
            inside = (residual[m] >= lo) & (residual[m] <= hi)
            row[f"coverage{round(float(level) * 100)}"] = round(float(np.mean(inside)), 3)
        out.append(row)
    return out


class AdaptedWarfarinModel:
    """A :class:`WarfarinDoseModel` with its members adapted to one group (or not adapted: ``n_support=0``)."""

    def __init__(self, model: WarfarinDoseModel, predictors: list[AdaptedModel], n_support: int) -> None:
        self.model, self.predictors, self.n_support = model, predictors, n_support

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        m = self.model
        return m._to_dose(m._predict_z(m._matrix(frame), self.predictors))

    def factor_effects(self, frame: pd.DataFrame) -> pd.DataFrame:
        """mg/week each factor adds to the dose: prediction minus prediction with that factor at its reference.

        The reference is a typical patient (mean age, height, weight and target INR; the most common
        genotype, race and indication; no interacting drug). Effects of a non-linear model need not add up.
        """
        m = self.model
        x = m._matrix(frame)
        base = m._to_dose(m._predict_z(x, self.predictors))
        factors = np.asarray(m.feature_factors_)
        effects = {}
        for factor in dict.fromkeys(m.feature_factors_):
            cols = np.flatnonzero(factors == factor)
            moved = x.copy()
            moved[:, cols] = m.reference_[cols]
            effects[factor] = base - m._to_dose(m._predict_z(moved, self.predictors))
        return pd.DataFrame(effects, index=frame.index)

    def suggest(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One row per patient: ``dose_mg_week`` (and per day), 80%/90% intervals, the top factors with their
        effect in mg/week, the key inputs that were missing, the IWPC pharmacogenetic dose, the VKORC1 source,
        and the disclaimer. Missing inputs are model features too (their pattern differed between IWPC sites):
        a record missing many of them gets a less reliable suggestion."""
        m = self.model
        dose = self.predict(frame)
        out = pd.DataFrame(index=frame.index)
        if "subject_id" in frame:
            out["subject_id"] = frame["subject_id"].astype(str)
        out["dose_mg_week"] = dose.round(1)
        out["dose_mg_day"] = (dose / 7).round(2)
        for level, (lo, hi) in m.intervals_.items():
            pct = round(float(level) * 100)
            out[f"interval{pct}_low_mg_week"] = (dose * np.exp(lo)).round(1)
            out[f"interval{pct}_high_mg_week"] = (dose * np.exp(hi)).round(1)
        out["iwpc_pharmacogenetic_mg_week"] = iwpc_pharmacogenetic_dose(frame).round(1)
        out["vkorc1_1639_source"] = impute_vkorc1(frame)[1].to_numpy()
        effects = self.factor_effects(frame)
        values = {f: describe_factor(frame, f) for f in FACTOR_COLUMNS}
        tops = []
        for idx in frame.index:
            row = effects.loc[idx].sort_values(key=np.abs, ascending=False)
            tops.append([{"factor": f, "value": str(values[f].loc[idx]), "effect_mg_week": round(float(e), 1)}
                         for f, e in row.head(m.top_factors).items() if abs(e) >= 0.5])
        out["top_factors"] = tops
        key = ("age", "height", "weight", "race", "CYP2C9", "VKORC1", "amiodarone", "enzyme inducer")
        unknown = {f: values[f].astype(str).str.endswith("unknown") | (values[f].astype(str) == "Unknown")
                   for f in key}
        out["missing_inputs"] = [[f for f in key if unknown[f].loc[idx]] for idx in frame.index]
        out["adapted_on_patients"] = self.n_support
        out["disclaimer"] = DISCLAIMER
        return out

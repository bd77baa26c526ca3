"""Next HbA1c from a patient's FHIR history: a MAML model adapted to each patient from their first results.

Each patient is a task (:func:`medmeta.fhir.patient_tasks`): examples are the patient's HbA1c
results, with features recorded strictly before each (previous HbA1c and days since it, latest
glucose and BMI, age, diabetes medications active then); the support set is the patient's first
``k`` results and the query set the later ones. The network starts from the last value and learns a
correction, which :meth:`HbA1cForecaster.adapt` fits to the patient.

On Synthea data these are associations in synthetic records, not causal effects of treatments.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.linear_model import Ridge

import medmeta
from medmeta.errors import DataError
from medmeta.learners.maml import MAML, AdaptedModel
from medmeta.learners.networks import WithLinearPrior, mlp
from medmeta.stats import bootstrap_ci
from medmeta.tasks import Task

DISCLAIMER = ("Forecast of the next HbA1c: decision support, not an order. Trained on synthetic (Synthea) records: "
              "associations with medications are not causal effects. Research software.")


class HbA1cForecaster:
    """Meta-learned next-HbA1c model over patient tasks; scikit-learn-like (settings in ``__init__``)."""

    def __init__(self, *, hidden: Sequence[int] = (16,), inner_steps: int = 1, inner_lr: float = 0.05,
                 adapt: Sequence[str] | None = ("net.output.",), meta_steps: int = 400, meta_batch_size: int = 16,
                 meta_lr: float = 3e-3, weight_decay: float = 1e-3, loss: str = "l1", seed: int = 0) -> None:
        self.hidden, self.inner_steps, self.inner_lr, self.loss = list(hidden), inner_steps, inner_lr, loss
        self.adapt_prefixes = list(adapt) if adapt is not None else None
        self.meta_steps, self.meta_batch_size, self.meta_lr = meta_steps, meta_batch_size, meta_lr
        self.weight_decay, self.seed = weight_decay, seed

    def get_params(self) -> dict[str, Any]:
        return {"adapt": self.adapt_prefixes, **{k: getattr(self, k) for k in (
            "hidden", "inner_steps", "inner_lr", "meta_steps", "meta_batch_size", "meta_lr", "weight_decay", "loss",
            "seed")}}

    def _maml(self, n_in: int) -> MAML:
        torch.manual_seed(self.seed)
        net = WithLinearPrior(mlp(n_in, 1, self.hidden, zero_output=True), n_in, 1)
        return MAML(net, loss=self.loss, inner_steps=self.inner_steps, inner_lr=self.inner_lr,
                    adapt=self.adapt_prefixes, meta_lr=self.meta_lr, meta_batch_size=self.meta_batch_size,
                    max_steps=self.meta_steps, weight_decay=self.weight_decay, seed=self.seed)

    def _x(self, x: np.ndarray) -> np.ndarray:
        return np.nan_to_num((np.asarray(x, np.float32) - self.mean_) / self.scale_).astype(np.float32)

    def _z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Target: the change from the previous result, scaled."""
        return ((np.asarray(y, np.float32) - np.asarray(x, np.float32)[:, 0]) / self.change_scale_)[:, None]

    def _tasks(self, tasks: Sequence[Task]) -> Iterator[Task]:
        rng = np.random.default_rng(self.seed)
        while True:
            t = tasks[rng.integers(len(tasks))]
            yield Task(self._x(t.support_x), self._z(t.support_x, t.support_y), self._x(t.query_x),
                       self._z(t.query_x, t.query_y))

    def fit(self, tasks: Sequence[Task]) -> HbA1cForecaster:
        """Meta-train on patient tasks (support: a patient's first results; query: the later ones)."""
        if not tasks:
            raise DataError("no patient has enough HbA1c results to learn from", field="4548-4")
        x = np.concatenate([np.r_[t.support_x, t.query_x] for t in tasks]).astype(np.float32)
        y = np.concatenate([np.r_[t.support_y, t.query_y] for t in tasks]).astype(np.float32)
        self.features_ = list(tasks[0].metadata.get("features", []))
        self.mean_ = np.nanmean(x, axis=0)
        self.scale_ = np.where(np.nanstd(x, axis=0) > 0, np.nanstd(x, axis=0), 1.0).astype(np.float32)
        self.change_scale_ = float(np.std(y - x[:, 0]) or 1.0)
        self.maml_ = self._maml(x.shape[1]).meta_fit(self._tasks(list(tasks)), show_progress=False)
        self.training_ = {"patients": len(tasks), "examples": len(y), "steps": self.maml_.history_["steps"]}
        return self

    def adapt(self, support_x: np.ndarray, support_y: np.ndarray) -> AdaptedHbA1c:
        """The model adapted to one patient's earlier results (none: the population model)."""
        if len(support_y) == 0:
            return AdaptedHbA1c(self, self.maml_.initial())
        return AdaptedHbA1c(self, self.maml_.adapt(self._x(support_x), self._z(support_x, support_y)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Next HbA1c (%) from the meta-learned model, not adapted."""
        return self.adapt(np.empty((0, len(self.mean_))), np.empty(0)).predict(x)

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.maml_.state_dict().items()},
                  directory / "model.safetensors")
        config = {"model": "HbA1cForecaster", "medmeta_version": medmeta.__version__, "params": self.get_params(),
                  "features": self.features_, "mean": self.mean_.tolist(), "scale": self.scale_.tolist(),
                  "change_scale": self.change_scale_, "training": self.training_, **(extra or {})}
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> HbA1cForecaster:
        """Rebuild a model written by :meth:`save` (weights from safetensors: no code is loaded)."""
        directory = Path(directory)
        try:
            config = json.loads((directory / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the model config ({exc})", source=directory / "config.json") from exc
        if config.get("model") != "HbA1cForecaster":
            raise DataError(f"not an HbA1c forecaster ({config.get('model')!r})", source=directory / "config.json")
        model = cls(**config["params"])
        model.features_, model.training_ = config["features"], config["training"]
        model.mean_ = np.asarray(config["mean"], np.float32)
        model.scale_ = np.asarray(config["scale"], np.float32)
        model.change_scale_ = config["change_scale"]
        model.maml_ = model._maml(len(model.mean_))
        model.maml_.load_state_dict(load_file(directory / "model.safetensors"))
        return model


class AdaptedHbA1c:
    """An HbA1c forecaster adapted to one patient."""

    def __init__(self, model: HbA1cForecaster, predictor: AdaptedModel) -> None:
        self.model, self.predictor = model, predictor

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if len(x) == 0:
            return np.empty(0)
        change = self.predictor.predict(self.model._x(x))[:, 0] * self.model.change_scale_
        return (x[:, 0] + change).astype(float)


def evaluate(tasks: Sequence[Task], *, folds: int = 5, seed: int = 0, n_boot: int = 1000,
             params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Patient-level cross-validation on the query results of every patient (each patient is scored by models
    that never saw them): medmeta adapted on the patient's first results, medmeta not adapted, the last value,
    and a population ridge regression on the same features. MAE and RMSE with 95% bootstrap CIs over patients,
    and paired differences."""
    if len(tasks) < folds:
        raise DataError(f"{len(tasks)} patients with enough HbA1c results; cross-validation needs {folds}")
    order = np.random.default_rng(seed).permutation(len(tasks))
    per_patient: dict[str, list[np.ndarray]] = {m: [] for m in ("medmeta", "medmeta_not_adapted", "last_value",
                                                                  "population")}
    actual = []
    for fold in range(folds):
        test = [tasks[i] for i in order[fold::folds]]
        train = [tasks[i] for i in order if i not in set(order[fold::folds])]
        model = HbA1cForecaster(**(params or {})).fit(train)
        x = np.concatenate([np.r_[t.support_x, t.query_x] for t in train])
        y = np.concatenate([np.r_[t.support_y, t.query_y] for t in train])
        ridge = Ridge(alpha=1.0).fit(model._x(x), y - x[:, 0])
        for t in test:
            per_patient["medmeta"].append(model.adapt(t.support_x, t.support_y).predict(t.query_x))
            per_patient["medmeta_not_adapted"].append(model.predict(t.query_x))
            per_patient["last_value"].append(np.asarray(t.query_x[:, 0], float))
            per_patient["population"].append(t.query_x[:, 0] + ridge.predict(model._x(t.query_x)))
            actual.append(np.asarray(t.query_y, float))
    idx = np.arange(len(actual))

    def mae(method: str) -> callable:
        return lambda i: float(np.mean(np.abs(np.concatenate([per_patient[method][j] - actual[j] for j in i]))))

    def rmse(method: str) -> callable:
        return lambda i: float(np.sqrt(np.mean(np.concatenate([(per_patient[method][j] - actual[j]) ** 2
                                                                for j in i]))))

    methods = {}
    for m in per_patient:
        out = {}
        for name, f in (("mae", mae(m)), ("rmse", rmse(m))):
            value, low, high = bootstrap_ci(f, idx, n_resamples=n_boot, seed=seed)
            out[name] = {"value": round(value, 4), "ci95": [round(low, 4), round(high, 4)]}
        methods[m] = out
    differences = {}
    for base in ("population", "last_value"):
        value, low, high = bootstrap_ci(lambda i, b=base: mae("medmeta")(i) - mae(b)(i), idx, n_resamples=n_boot,
                                        seed=seed)
        differences[f"medmeta_minus_{base}_mae"] = {"value": round(value, 4), "ci95": [round(low, 4), round(high, 4)]}
    residuals = np.concatenate([actual[j] - per_patient["medmeta"][j] for j in idx])
    return {"patients": len(tasks), "query_results": int(sum(len(a) for a in actual)), "folds": folds,
            "support_results": int(tasks[0].n_support), "methods": methods, "differences": differences,
            "interval80": [round(float(q), 4) for q in np.quantile(residuals, [0.1, 0.9])],
            "unit": "% (HbA1c)", "disclaimer": DISCLAIMER}

"""Predictions for patients with several modalities, for the batch job and the dashboard.

Per-patient inputs are ``{modality name: features or None}`` dicts (None or an absent key: the patient does
not have that modality, which is normal). Each prediction says which modalities it used, how much each
weighed, and its prediction interval where one was calibrated for that set of modalities.

```python
from medmeta.fusion import FusionModel, predict_patient
model = FusionModel.load(medmeta.models.model_dir("warfarin_fusion"))
p = predict_patient(model, {"clinical": {...}, "genotype": {"cyp2c9": "*1/*3", "vkorc1_1639": "A/G"}})
p.prediction, p.intervals["80%"], p.modalities_used
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from medmeta.errors import DataError, Rejection
from medmeta.fusion.modalities import Multimodal
from medmeta.fusion.model import FusionModel

DISCLAIMER = ("Decision support for a clinician, not an order: review it against the patient's record. "
              "Research software, not for clinical use without review.")


@dataclass(frozen=True)
class FusedPrediction:
    """One patient's prediction: value (or class and probabilities), intervals, and the modalities behind it.

    ``intervals`` maps ``"80%"``-style levels to ``(low, high)``; it is empty when no interval was calibrated
    for the set of modalities this patient had (or for a classifier).
    """

    patient_id: str
    target: str
    prediction: float | str
    unit: str | None
    intervals: dict[str, tuple[float, float]]
    probabilities: dict[str, float] | None
    modalities_used: list[str]
    modalities_missing: list[str]
    modality_weights: dict[str, float]
    disclaimer: str = DISCLAIMER

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["intervals"] = {k: list(v) for k, v in self.intervals.items()}
        return out


def predict_multimodal(model: FusionModel, x: Multimodal) -> tuple[list[FusedPrediction], list[Rejection]]:
    """Predictions for the patients of ``x``; patients with none of the model's modalities are rejected."""
    has = x.present(model.names).any(1)
    rejected = [Rejection("<input>", f"none of the model's modalities {model.names} is available",
                          record_id=str(pid), field="modalities") for pid in x.ids[~has]]
    x = x[np.flatnonzero(has)]
    if not len(x):
        return [], rejected
    weights = model.modality_weights(x)
    used = x.used(model.names)
    if model.task == "classification":
        proba = model.predict_proba(x)
        values: list[Any] = [model.classes_[i] for i in proba.argmax(1)]
        intervals: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    else:
        proba = None
        values = model.predict(x).tolist()
        intervals = model.predict_interval(x) if model.calibration_ else {}
    out = []
    for i, pid in enumerate(x.ids):
        bounds = {f"{round(float(c) * 100)}%": (round(float(lo[i]), 4), round(float(hi[i]), 4))
                  for c, (lo, hi) in intervals.items() if np.isfinite(lo[i]) and np.isfinite(hi[i])}
        out.append(FusedPrediction(
            patient_id=str(pid), target=model.target,
            prediction=round(float(values[i]), 4) if model.task == "regression" else str(values[i]),
            unit=model.unit, intervals=bounds,
            probabilities=None if proba is None else {str(c): round(float(p), 4)
                                                      for c, p in zip(model.classes_, proba[i], strict=True)},
            modalities_used=used[i], modalities_missing=[n for n in model.names if n not in used[i]],
            modality_weights={n: round(float(weights.iloc[i][n]), 4) for n in used[i]}))
    return out, rejected


def predict_patients(model: FusionModel, records: Sequence[Mapping[str, Any]], ids: Sequence[Any] | None = None
                     ) -> tuple[list[FusedPrediction], list[Rejection]]:
    """Predictions for patients given as ``{modality: features or None}`` dicts.

    A patient whose features cannot be read, or who has none of the model's modalities, is returned in
    the rejections with the reason (patient and field named); the others are predicted.
    """
    ids = [str(i) for i in (ids if ids is not None else range(len(records)))]
    good, good_ids, rejected = [], [], []
    for pid, record in zip(ids, records, strict=True):
        try:
            Multimodal.from_records(model.modalities, [record], [pid])
        except DataError as exc:
            rejected.append(exc.rejection)
            continue
        good.append(record)
        good_ids.append(pid)
    if not good:
        return [], rejected
    predictions, empty = predict_multimodal(model, Multimodal.from_records(model.modalities, good, good_ids))
    return predictions, rejected + empty


def predict_patient(model: FusionModel, inputs: Mapping[str, Any], *, patient_id: str = "patient") -> FusedPrediction:
    """One patient's prediction; a clear :class:`~medmeta.errors.DataError` if the inputs cannot be used."""
    x = Multimodal.from_records(model.modalities, [inputs], [patient_id])
    predictions, rejected = predict_multimodal(model, x)
    if rejected:
        raise DataError.from_rejection(rejected[0])
    return predictions[0]


def predictions_frame(predictions: Sequence[FusedPrediction]) -> pd.DataFrame:
    """One row per prediction (intervals as ``interval80_low`` / ``interval80_high`` columns)."""
    rows = []
    for p in predictions:
        row = p.to_dict()
        for level, (lo, hi) in row.pop("intervals").items():
            row[f"interval{level.rstrip('%')}_low"], row[f"interval{level.rstrip('%')}_high"] = lo, hi
        rows.append(row)
    return pd.DataFrame(rows)

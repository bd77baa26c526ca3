"""Warfarin dose model inputs: the IWPC frame's columns -> a numeric feature matrix, by clinical factor.

Only the columns of the typed IWPC frame are read (the FHIR adapters produce the same ones);
a column that is absent counts as missing for every patient. Missing values stay visible to the
model as ``*_missing`` indicators instead of being guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medmeta.datasets.warfarin import INDICATIONS
from medmeta.treatment.iwpc import (
    ENZYME_INDUCERS,
    _flag,
    _text,
    cyp2c9,
    impute_vkorc1,
    iwpc_inputs,
    race_category,
)

DRUGS = (
    "aspirin", "acetaminophen", "acetaminophen_over_1300mg", "simvastatin", "atorvastatin", "fluvastatin",
    "lovastatin", "pravastatin", "rosuvastatin", "cerivastatin", "amiodarone", "carbamazepine", "phenytoin",
    "rifampin", "sulfonamide_antibiotics", "macrolide_antibiotics", "antifungal_azoles", "herbal_supplements",
)
CONDITIONS = ("diabetes", "heart_failure", "valve_replacement", "current_smoker")
NUMERIC = ("age_decade", "height_cm", "weight_kg", "target_inr")
INDICATION_COLUMNS = tuple(f"indication_{name}" for name in INDICATIONS.values())

#: Clinical factors (what a suggestion names) -> the frame columns they are computed from.
FACTOR_COLUMNS: dict[str, tuple[str, ...]] = {
    "age": ("age_decade",),
    "height": ("height_cm",),
    "weight": ("weight_kg",),
    "race": ("race",),
    "ethnicity": ("ethnicity",),
    "sex": ("sex",),
    "CYP2C9": ("cyp2c9",),
    "VKORC1": ("vkorc1_1639", "vkorc1_2255", "vkorc1_1173", "vkorc1_1542"),
    "amiodarone": ("amiodarone",),
    "enzyme inducer": ENZYME_INDUCERS,
    "statin": ("simvastatin", "atorvastatin", "fluvastatin", "lovastatin", "pravastatin", "rosuvastatin",
               "cerivastatin"),
    "azole antifungal": ("antifungal_azoles",),
    "sulfonamide antibiotic": ("sulfonamide_antibiotics",),
    "macrolide antibiotic": ("macrolide_antibiotics",),
    "aspirin": ("aspirin",),
    "acetaminophen": ("acetaminophen", "acetaminophen_over_1300mg"),
    "herbal supplement": ("herbal_supplements",),
    "indication": INDICATION_COLUMNS,
    "target INR": ("target_inr",),
    "diabetes": ("diabetes",),
    "heart failure": ("heart_failure",),
    "valve replacement": ("valve_replacement",),
    "smoking": ("current_smoker",),
}
#: Factors measured on a scale (their reference value is the population mean, not the most common value).
CONTINUOUS_FACTORS = ("age", "height", "weight", "target INR")


def _missing(frame: pd.DataFrame, column: str) -> np.ndarray:
    return (frame[column].isna() if column in frame else pd.Series(True, index=frame.index)).to_numpy(dtype=float)


def _number(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").astype(float).to_numpy()


def indication_group(frame: pd.DataFrame) -> pd.Series:
    """One indication per patient for grouping: afib, valve, vte (DVT/PE), other or unknown."""
    flag = {c: _flag(frame, f"indication_{c}") > 0 for c in INDICATIONS.values()}
    group = np.select(
        [flag["afib"], flag["heart_valve"], flag["dvt"] | flag["pe"],
         flag["cardiomyopathy"] | flag["stroke"] | flag["post_orthopedic"] | flag["other"]],
        ["afib", "valve", "vte", "other"], default="unknown")
    return pd.Series(group, index=frame.index)


def patient_groups(frame: pd.DataFrame) -> pd.Series:
    """The task a patient belongs to: ``race|indication group`` (for example ``Asian|afib``)."""
    return race_category(frame) + "|" + indication_group(frame)


@dataclass(frozen=True)
class Features:
    """The feature matrix (NaN where a number is missing), its column names and each column's factor."""

    values: np.ndarray
    names: tuple[str, ...]
    factors: tuple[str, ...]


def warfarin_features(frame: pd.DataFrame) -> Features:
    """Numeric features of each patient (row) of an IWPC-layout frame.

    They include every input of the IWPC algorithms under the same name (see
    :func:`~medmeta.treatment.iwpc.iwpc_inputs`), so the IWPC formula is a linear function of them.
    """
    cols: dict[str, tuple[str, np.ndarray]] = {}

    def add(name: str, factor: str, values: Any) -> None:
        cols[name] = (factor, np.asarray(values, dtype=float))

    iwpc = iwpc_inputs(frame, impute=False)
    target_inr = _number(frame, "target_inr")
    for column, factor, values in (*((c, f, iwpc[c]) for c, f in (("age_decade", "age"), ("height_cm", "height"),
                                                                    ("weight_kg", "weight"))),
                                   ("target_inr", "target INR", target_inr)):
        add(column, factor, values)
        add(f"{column}_missing", factor, np.isnan(np.asarray(values, dtype=float)))
    for column in iwpc.columns[3:]:
        factor = ("race" if column.startswith("race") else "VKORC1" if column.startswith("vkorc1")
                  else "CYP2C9" if column.startswith("cyp2c9") else "enzyme inducer" if column == "enzyme_inducer"
                  else "amiodarone")
        add(column, factor, iwpc[column])
    c = cyp2c9(frame)
    add("cyp2c9_missing", "CYP2C9", c.isna())
    ethnicity = _text(frame, "ethnicity")
    add("hispanic", "ethnicity", ethnicity == "Hispanic or Latino")
    add("ethnicity_unknown", "ethnicity", ~ethnicity.isin(["Hispanic or Latino", "not Hispanic or Latino"]))
    sex = _text(frame, "sex")
    add("male", "sex", sex == "male")
    add("sex_unknown", "sex", ~sex.isin(["male", "female"]))

    factor_of = {c: f for f, columns in FACTOR_COLUMNS.items() for c in columns}
    for column in (*DRUGS, *CONDITIONS):
        if column != "amiodarone":
            add(column, factor_of[column], _flag(frame, column))
        add(f"{column}_missing", factor_of[column], _missing(frame, column))
    for column in INDICATION_COLUMNS:
        add(column, "indication", _flag(frame, column))
    add("indication_missing", "indication", np.logical_and.reduce([_flag(frame, c) == 0
                                                                   for c in INDICATION_COLUMNS]))
    names = tuple(cols)
    return Features(np.column_stack([cols[n][1] for n in names]), names, tuple(cols[n][0] for n in names))


def describe_factor(frame: pd.DataFrame, factor: str) -> pd.Series:
    """Each patient's value of one factor, in words (for example ``"A/A (imputed from vkorc1_1173)"``)."""
    if factor == "VKORC1":
        value, source = impute_vkorc1(frame)
        text = "-1639 " + value.fillna("unknown")
        imputed = ~source.isin(["genotyped", "missing"])
        return text.where(~imputed, text + " (imputed from " + source.astype(str) + ")")
    if factor == "CYP2C9":
        return cyp2c9(frame).fillna("unknown")
    if factor == "race":
        return race_category(frame)
    if factor == "age":
        decade = _number(frame, "age_decade")
        return pd.Series([f"{int(d)}0-{int(d)}9 years" if d == d else "unknown" for d in decade], index=frame.index)
    if factor in ("height", "weight", "target INR"):
        column = {"height": "height_cm", "weight": "weight_kg", "target INR": "target_inr"}[factor]
        unit = {"height": " cm", "weight": " kg", "target INR": ""}[factor]
        return pd.Series([f"{v:g}{unit}" if v == v else "unknown" for v in _number(frame, column)], index=frame.index)
    if factor == "indication":
        return indication_group(frame)
    columns = [c for c in FACTOR_COLUMNS[factor] if c in frame]
    if not columns:
        return pd.Series("unknown", index=frame.index)
    if factor in ("ethnicity", "sex"):
        return _text(frame, columns[0]).fillna("unknown").astype(str)
    taking = np.maximum.reduce([_flag(frame, c) for c in columns]) > 0
    unknown = np.logical_and.reduce([_missing(frame, c) > 0 for c in columns])
    return pd.Series(np.where(taking, "yes", np.where(unknown, "unknown", "no")), index=frame.index)

"""The IWPC warfarin dosing algorithms (N Engl J Med 2009;360:753-64, appendix) and the inputs they share.

Everything here reads only the columns of the typed IWPC frame (``medmeta.datasets.warfarin.load_iwpc``),
which the FHIR adapters reproduce, so it works the same on CSV and on FHIR input.

Both algorithms predict the square root of the weekly dose. Missing age, height or weight
are replaced by :data:`IWPC_MEANS`; with that, they give MAE 13.2 (fixed 35 mg/week), 10.1
(clinical) and 8.4 mg/week (pharmacogenetic) on the 4,426 dosed patients of the IWPC file
here (tests/test_warfarin.py checks it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Means over the 4,566 IWPC patients available here, used where age (decades), height or weight is missing.
IWPC_MEANS = {"age_decade": 5.93, "height_cm": 168.2, "weight_kg": 78.1}
#: The "standard" starting dose the algorithms are compared with (5 mg/day).
FIXED_DOSE_MG_WEEK = 35.0

RACES = ("White", "Asian", "Black or African American")
"""Races the algorithms know; anything else (``Unknown``, mixed, other) is "missing or mixed race"."""

CYP2C9_KNOWN = ("*1/*1", "*1/*2", "*1/*3", "*2/*2", "*2/*3", "*3/*3")
"""Diplotypes with their own IWPC coefficient; others (``*1/*5``, ``*1/*11``...) count as unknown."""

#: Rules of the IWPC appendix for a missing VKORC1 -1639 G>A (rs9923231) genotype, in order:
#: (marker column, races it may be used for (None: all), marker genotype -> -1639 genotype).
#: rs2359612 (2255) and rs8050894 (1542) are in strong linkage with -1639 except in Black patients,
#: rs9934438 (1173) in all races; tests/test_warfarin.py re-checks the concordance on the IWPC file.
VKORC1_RULES: tuple[tuple[str, tuple[str, ...] | None, dict[str, str]], ...] = (
    ("vkorc1_2255", ("White", "Asian"), {"C/C": "G/G", "C/T": "A/G", "T/T": "A/A"}),
    ("vkorc1_1173", None, {"C/C": "G/G", "C/T": "A/G", "T/T": "A/A"}),
    ("vkorc1_1542", ("White", "Asian"), {"G/G": "G/G", "C/G": "A/G", "C/C": "A/A"}),
)

ENZYME_INDUCERS = ("carbamazepine", "phenytoin", "rifampin")


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    """A text column as plain Python objects with None for missing (absent columns are all missing)."""
    if column not in frame:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    s = frame[column].astype(object)
    return s.where(s.notna(), None)


def _genotype(value: object) -> str | None:
    """``"G/A"`` -> ``"A/G"``; ``"*3/*1"`` -> ``"*1/*3"``: one spelling per genotype, alleles in order."""
    if value is None or not isinstance(value, str) or "/" not in value:
        return None
    alleles = [a.strip() for a in value.split("/")]
    if len(alleles) != 2 or not all(alleles):
        return None

    def order(a: str) -> tuple:
        digits = "".join(ch for ch in a if ch.isdigit())
        return (int(digits) if digits else 10**6, a)

    return "/".join(sorted(alleles, key=order))


def _genotypes(series: pd.Series) -> pd.Series:
    out = series.map(_genotype).astype(object)
    return out.where(out.notna(), None)


def race_category(frame: pd.DataFrame) -> pd.Series:
    """``White``, ``Asian``, ``Black or African American`` or ``Unknown`` (missing, mixed or other)."""
    race = _text(frame, "race")
    return race.where(race.isin(RACES), "Unknown").astype(str)


def cyp2c9(frame: pd.DataFrame) -> pd.Series:
    """CYP2C9 diplotype with alleles in order, None when missing."""
    return _genotypes(_text(frame, "cyp2c9"))


def impute_vkorc1(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """VKORC1 -1639 genotype, imputed by :data:`VKORC1_RULES` where missing, and where each value came from.

    The source is ``"genotyped"``, the marker it was imputed from (``"vkorc1_1173"``...), or
    ``"missing"``.
    """
    race = race_category(frame)
    value = _genotypes(_text(frame, "vkorc1_1639"))
    source = pd.Series(np.where(value.notna(), "genotyped", "missing"), index=frame.index, dtype=object)
    for column, races, mapping in VKORC1_RULES:
        candidate = _genotypes(_text(frame, column)).map(mapping)
        allowed = race.isin(races) if races else pd.Series(True, index=frame.index)
        use = value.isna() & candidate.notna() & allowed
        value = value.where(~use, candidate)
        source = source.where(~use, column)
    return value, source


def _flag(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A boolean column as 0/1 with missing read as 0 ("not reported"), as the IWPC algorithms do."""
    if column not in frame:
        return np.zeros(len(frame))
    return frame[column].astype("boolean").fillna(False).to_numpy(dtype=float)


def enzyme_inducer(frame: pd.DataFrame) -> np.ndarray:
    """1 when the patient takes carbamazepine, phenytoin or rifampin."""
    return np.maximum.reduce([_flag(frame, c) for c in ENZYME_INDUCERS])


#: sqrt(weekly dose in mg) = intercept + sum of coefficient x input (inputs from :func:`iwpc_inputs`).
CLINICAL = {
    "intercept": 4.0376, "age_decade": -0.2546, "height_cm": 0.0118, "weight_kg": 0.0134,
    "race_asian": -0.6752, "race_black": 0.4060, "race_unknown": 0.0443,
    "enzyme_inducer": 1.2799, "amiodarone": -0.5695,
}
PHARMACOGENETIC = {
    "intercept": 5.6044, "age_decade": -0.2614, "height_cm": 0.0087, "weight_kg": 0.0128,
    "vkorc1_ag": -0.8677, "vkorc1_aa": -1.6974, "vkorc1_unknown": -0.4854,
    "cyp2c9_12": -0.5211, "cyp2c9_13": -0.9357, "cyp2c9_22": -1.0616, "cyp2c9_23": -1.9206, "cyp2c9_33": -2.3312,
    "cyp2c9_unknown": -0.2188,
    "race_asian": -0.1092, "race_black": -0.2760, "race_unknown": -0.1032,
    "enzyme_inducer": 1.1816, "amiodarone": -0.5503,
}


def iwpc_inputs(frame: pd.DataFrame, *, impute: bool = True) -> pd.DataFrame:
    """The inputs of both algorithms, one numeric column per term (missing body size -> :data:`IWPC_MEANS`)."""
    out = pd.DataFrame(index=frame.index)
    for column in ("age_decade", "height_cm", "weight_kg"):
        values = pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(np.nan,
                                                                                                  index=frame.index)
        values = values.astype(float)
        out[column] = values.fillna(IWPC_MEANS[column]) if impute else values
    race = race_category(frame)
    out["race_asian"] = (race == "Asian").astype(float)
    out["race_black"] = (race == "Black or African American").astype(float)
    out["race_unknown"] = (race == "Unknown").astype(float)
    vkorc1, _ = impute_vkorc1(frame)
    out["vkorc1_ag"] = (vkorc1 == "A/G").astype(float)
    out["vkorc1_aa"] = (vkorc1 == "A/A").astype(float)
    out["vkorc1_unknown"] = vkorc1.isna().astype(float)
    c = cyp2c9(frame)
    for genotype in CYP2C9_KNOWN[1:]:
        out["cyp2c9_" + genotype.replace("*", "").replace("/", "")] = (c == genotype).astype(float)
    out["cyp2c9_unknown"] = (~c.isin(CYP2C9_KNOWN)).astype(float)
    out["enzyme_inducer"] = enzyme_inducer(frame)
    out["amiodarone"] = _flag(frame, "amiodarone")
    return out


def sqrt_dose(inputs: pd.DataFrame, coefficients: dict[str, float]) -> np.ndarray:
    """The linear predictor of an IWPC algorithm: sqrt(mg/week)."""
    terms = [name for name in coefficients if name != "intercept"]
    return coefficients["intercept"] + inputs[terms].to_numpy(dtype=float) @ np.array([coefficients[t] for t in terms])


def iwpc_clinical_dose(frame: pd.DataFrame) -> np.ndarray:
    """Weekly dose (mg) by the IWPC clinical algorithm (no genotype)."""
    return np.square(sqrt_dose(iwpc_inputs(frame), CLINICAL))


def iwpc_pharmacogenetic_dose(frame: pd.DataFrame) -> np.ndarray:
    """Weekly dose (mg) by the IWPC pharmacogenetic algorithm (VKORC1 -1639 imputed as the appendix does)."""
    return np.square(sqrt_dose(iwpc_inputs(frame), PHARMACOGENETIC))

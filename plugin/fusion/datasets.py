"""Real paired multimodal data: the same patients' records in several modalities (never invented pairings).

- :func:`warfarin_data`: IWPC warfarin patients (``load_iwpc`` or the FHIR adapters' ``iwpc_frame``):
  ``clinical`` (the warfarin model's clinical features) and ``genotype`` (CYP2C9 diplotype and seven VKORC1
  SNPs as called; present when any of them was genotyped). Target: stable weekly dose (mg).
- :func:`diabetes_data`: HbA1c measurements of FHIR patients (the Synthea records): ``demographics``
  (age, sex, race, ethnicity), ``labs`` (the last HbA1c and glucose values and how long ago they were
  measured) and ``medications`` (diabetes treatment classes, active medication orders); everything
  recorded **strictly before** the measurement. Target: the HbA1c value (%).

Each returns a :class:`Paired`: inputs, targets, one ``info`` row per example, the modality specs, and
the input values it could not interpret (rejections with patient and field; the value counts as unknown).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medmeta.errors import Rejection
from medmeta.fusion.modalities import Modality, Multimodal
from medmeta.treatment.iwpc import CYP2C9_KNOWN, _genotypes, _text, race_category
from medmeta.treatment.warfarin_features import patient_groups, warfarin_features


@dataclass
class Paired:
    """Inputs ``x``, targets ``y`` (NaN where unknown), ``info`` per example, ``modalities``, ``rejected`` values."""

    x: Multimodal
    y: np.ndarray
    info: pd.DataFrame
    modalities: list[Modality]
    rejected: list[Rejection] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> Paired:
        return Paired(self.x[index], self.y[index], self.info.iloc[index].reset_index(drop=True), self.modalities,
                      self.rejected)


# -- warfarin (IWPC) ------------------------------------------------------------------------------------
GENOTYPE_FACTORS = ("CYP2C9", "VKORC1")
#: The calls of each marker in IWPC's notation (alleles sorted; VKORC1 on the coding strand, as ``load_iwpc``
#: and the FHIR adapters write them). CYP2C9 diplotypes without their own IWPC coefficient are ``"other"``.
GENOTYPE_CALLS: dict[str, tuple[str, ...]] = {
    "cyp2c9": (*CYP2C9_KNOWN, "other"),
    "vkorc1_1639": ("G/G", "A/G", "A/A"),
    "vkorc1_497": ("G/G", "G/T", "T/T"),
    "vkorc1_1173": ("C/C", "C/T", "T/T"),
    "vkorc1_1542": ("C/C", "C/G", "G/G"),
    "vkorc1_3730": ("G/G", "A/G", "A/A"),
    "vkorc1_2255": ("C/C", "C/T", "T/T"),
    "vkorc1_4451": ("C/C", "A/C", "A/A"),
}


def _clinical_columns() -> list[str]:
    f = warfarin_features(pd.DataFrame(index=range(0)))
    return [n for n, factor in zip(f.names, f.factors, strict=True) if factor not in GENOTYPE_FACTORS]


def warfarin_modalities() -> list[Modality]:
    """``clinical`` (tabular) and ``genotype`` (CYP2C9 + VKORC1 markers)."""
    return [Modality("clinical", "tabular", features=_clinical_columns()),
            Modality("genotype", "genotype", features=list(GENOTYPE_CALLS), categories=list(GENOTYPE_CALLS.values()))]


def warfarin_data(frame: pd.DataFrame) -> Paired:
    """Every patient (row) of an IWPC-layout frame; ``y`` is ``dose_mg_week`` (NaN when unknown or not positive).

    The clinical modality is present when any of age, height, weight, race or sex is known; the genotype
    modality when any marker was genotyped. ``info`` has ``subject_id``, ``race``, ``group`` (race x indication)
    and ``genotype`` (``"complete"``: CYP2C9 and VKORC1 -1639 known, after the IWPC imputation rules;
    ``"partial"``; ``"none"``), and the IWPC clinical and pharmacogenetic doses (mg/week) for reference.
    """
    from medmeta.treatment.iwpc import impute_vkorc1, iwpc_clinical_dose, iwpc_pharmacogenetic_dose

    modalities = warfarin_modalities()
    features = warfarin_features(frame)
    keep = [features.names.index(n) for n in modalities[0].features]
    clinical = features.values[:, keep].astype(np.float32)
    ids = (frame["subject_id"].astype(str).to_numpy() if "subject_id" in frame
           else np.arange(len(frame)).astype(str))
    source = str(frame.attrs.get("source", "<frame>"))
    rejected: list[Rejection] = []
    codes = np.zeros((len(frame), len(GENOTYPE_CALLS)), dtype=np.float32)
    for j, (marker, calls) in enumerate(GENOTYPE_CALLS.items()):
        raw = _text(frame, marker)
        values = _genotypes(raw)
        if marker == "cyp2c9":
            values = values.where(values.isna() | values.isin(CYP2C9_KNOWN) | ~values.astype(str).str.startswith("*"),
                                  "other")
        for i, (given, value) in enumerate(zip(raw, values, strict=True)):
            if value in calls:
                codes[i, j] = calls.index(value) + 1
            elif given is not None:
                rejected.append(Rejection(source, f"genotype {given!r} not interpretable; read as unknown",
                                          row=None, field=marker, record_id=ids[i]))
    known = {c: frame[c].notna().to_numpy() if c in frame else np.zeros(len(frame), dtype=bool)
             for c in ("age_decade", "height_cm", "weight_kg", "race", "sex")}
    has_clinical = np.logical_or.reduce(list(known.values()))
    has_genotype = (codes > 0).any(1)
    x = Multimodal({"clinical": clinical, "genotype": codes}, {"clinical": has_clinical, "genotype": has_genotype},
                   ids)
    dose = pd.to_numeric(frame["dose_mg_week"], errors="coerce").astype(float).to_numpy() \
        if "dose_mg_week" in frame else np.full(len(frame), np.nan)
    dose = np.where(dose > 0, dose, np.nan)
    vkorc1, _ = impute_vkorc1(frame)
    cyp = codes[:, 0] > 0
    status = np.where(cyp & vkorc1.notna().to_numpy(), "complete", np.where(has_genotype, "partial", "none"))
    info = pd.DataFrame({"subject_id": ids, "race": race_category(frame).to_numpy(),
                         "group": patient_groups(frame).to_numpy(), "genotype": status,
                         "iwpc_clinical": iwpc_clinical_dose(frame),
                         "iwpc_pharmacogenetic": iwpc_pharmacogenetic_dose(frame)})
    return Paired(x, dose, info, modalities, rejected)


# -- diabetes (FHIR, e.g. Synthea) --------------------------------------------------------------------------
HBA1C, GLUCOSE = "4548-4", "2339-0"
#: Laboratory channels of the ``labs`` modality: LOINC code -> name.
LABS = {HBA1C: "hba1c", GLUCOSE: "glucose"}
#: Races of the US Core OMB categories (matched in the patient's race text), then "other or unknown".
RACES = ("white", "black", "asian", "american indian", "pacific islander")
HISTORY = 8
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def diabetes_modalities(history: int = HISTORY) -> list[Modality]:
    """``demographics`` (tabular), ``labs`` (series of ``history`` steps) and ``medications`` (tabular)."""
    from medmeta.fhir.tasks import DIABETES_TREATMENTS

    channels = [c for name in LABS.values() for c in (name, f"{name}_years_before")]
    meds = [c for t in DIABETES_TREATMENTS for c in (f"{t}_active", f"{t}_years_since_start")]
    return [Modality("demographics", "tabular",
                     features=["age", "male", *(f"race_{r.replace(' ', '_')}" for r in RACES), "race_other",
                               "hispanic"]),
            Modality("labs", "series", features=channels, length=history),
            Modality("medications", "tabular", features=[*meds, "active_orders"])]


def _years(times: pd.Series) -> np.ndarray:
    """Timestamps as years since 1970 (floats; NaN where missing)."""
    return ((pd.to_datetime(times, utc=True) - EPOCH) / pd.Timedelta(days=365.2425)).to_numpy(dtype=float)


def diabetes_data(tables, *, history: int = HISTORY, min_previous: int = 0) -> Paired:
    """One example per HbA1c measurement of each patient (distinct times), from what was recorded before it.

    ``tables`` are the FHIR adapters' :class:`~medmeta.fhir.FhirTables`. ``labs`` is present when an HbA1c or
    glucose value was recorded before; ``medications`` when any medication order or statement started before;
    ``demographics`` when the birth date or sex is known. ``min_previous`` keeps only examples with at least
    that many earlier HbA1c values. ``info``: ``patient_id``, ``time``, ``previous_hba1c`` (NaN if none),
    ``diabetes`` (a diabetes Condition with onset before the measurement).
    """
    from medmeta.fhir.tasks import DIABETES_TREATMENTS, _treatment_matrix

    modalities = diabetes_modalities(history)
    obs = tables.observations
    obs = obs[obs["code"].isin(list(LABS)) & obs["value"].notna() & obs["time"].notna()]
    obs = obs.assign(t=_years(obs["time"])).sort_values(["patient_id", "t"], kind="stable")
    labs = {pid: {code: (g.loc[g["code"] == code, "t"].to_numpy(), g.loc[g["code"] == code, "value"].to_numpy(float))
                  for code in LABS} for pid, g in obs.groupby("patient_id", sort=True)}
    patients = tables.patients.assign(birth=_years(tables.patients["birth_date"])).set_index("patient_id")
    meds = tables.medications.dropna(subset=["time"])
    meds = meds.assign(t=_years(meds["time"]), end_t=_years(meds["end"]))
    classes = _treatment_matrix(meds, DIABETES_TREATMENTS)
    meds_by = dict(tuple(meds.groupby("patient_id", sort=False)))
    classes_by = dict(tuple(classes.groupby("patient_id", sort=False)))
    diab = tables.conditions[tables.conditions["code"].astype(str) == "44054006"]
    onset = pd.Series(np.fmin(_years(diab["onset"]), _years(diab["recorded"])), index=diab["patient_id"].to_numpy())
    onset = onset.groupby(level=0).min()

    rows: list[dict] = []
    demo_x, lab_x, med_x, masks, ys = [], [], [], [], []
    for pid, series in labs.items():
        times, values = series[HBA1C]
        _, first = np.unique(times, return_index=True)
        patient = patients.loc[pid] if pid in patients.index else None
        race = str(patient["race"]).lower() if patient is not None and pd.notna(patient["race"]) else ""
        ethnicity = str(patient["ethnicity"]).lower() if patient is not None and pd.notna(patient["ethnicity"]) else ""
        race_flags = [float(r in race) for r in RACES]
        gender = patient["gender"] if patient is not None else None
        birth = patient["birth"] if patient is not None else np.nan
        pm, pc = meds_by.get(pid), classes_by.get(pid)
        for i in first:
            now = times[i]
            earlier = int(np.searchsorted(times, now, side="left"))
            if earlier < min_previous:
                continue
            demo = [now - birth, float(gender == "male") if gender in ("male", "female") else np.nan, *race_flags,
                    float(not any(race_flags)), float("hispanic" in ethnicity and "not" not in ethnicity)]
            has_demo = bool(np.isfinite(birth)) or gender in ("male", "female")
            channels = []  # laboratory histories strictly before now, most recent last
            for code in LABS:
                t, v = series[code]
                n = int(np.searchsorted(t, now, side="left"))
                t, v = t[max(0, n - history):n], v[max(0, n - history):n]
                pad = np.full(history - len(v), np.nan)
                channels += [np.concatenate([pad, v]), np.concatenate([pad, now - t])]
            lab = np.stack(channels).astype(np.float32)
            has_lab = bool(np.isfinite(lab).any())
            before = pm[pm["t"].to_numpy() < now] if pm is not None else None
            has_med = before is not None and len(before) > 0
            med = []
            for name in DIABETES_TREATMENTS:
                these = None if pc is None else pc[(pc["treatment"] == name).to_numpy() & (pc["t"].to_numpy() < now)]
                on = these is not None and bool((~(these["end_t"].to_numpy() < now)).any())
                med += [float(on), float(now - these["t"].min()) if these is not None and len(these) else 0.0]
            med.append(float(np.log1p((~(before["end_t"].to_numpy() < now)).sum())) if has_med else 0.0)
            demo_x.append(demo)
            lab_x.append(lab)
            med_x.append(med)
            masks.append((has_demo, has_lab, has_med))
            ys.append(values[i])
            rows.append({"patient_id": str(pid), "time": EPOCH + pd.Timedelta(days=now * 365.2425),
                         "previous_hba1c": values[earlier - 1] if earlier else np.nan, "previous_count": earlier,
                         "diabetes": bool(pid in onset.index and onset[pid] < now)})
    n = len(ys)
    mask = np.asarray(masks, dtype=bool).reshape(n, 3)
    x = Multimodal({"demographics": np.asarray(demo_x, dtype=np.float32).reshape(n, -1),
                    "labs": np.asarray(lab_x, dtype=np.float32).reshape(n, len(LABS) * 2, history),
                    "medications": np.asarray(med_x, dtype=np.float32).reshape(n, -1)},
                   {"demographics": mask[:, 0], "labs": mask[:, 1], "medications": mask[:, 2]},
                   np.array([r["patient_id"] for r in rows], dtype=str))
    info = pd.DataFrame(rows, columns=["patient_id", "time", "previous_hba1c", "previous_count", "diabetes"])
    return Paired(x, np.asarray(ys, dtype=float), info, modalities)

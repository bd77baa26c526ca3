"""Continuous glucose monitoring <-> FHIR R4, in the form of the HL7 CGM implementation guide.

Each reading is an Observation coded LOINC 99504-3 (Glucose [Mass/volume] in Interstitial
fluid, mg/dL) or 105272-9 (the molar form, mmol/L). :func:`cgm_resources` writes a subject's
series; :func:`cgm_series` reads the series of every patient of a FHIR source back into
:class:`~medmeta.datasets.cgm.CGMSeries`, the input of the glucose models.

CSV times without a time zone (as in the iglu files) are written as UTC, since FHIR needs an
offset; reading back gives the same wall-clock times.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from medmeta.datasets.cgm import CGMSeries
from medmeta.fhir import terminology as t
from medmeta.fhir.normalise import FhirTables, measurements

CGM_MASS = "99504-3"
CGM_MOLAR = "105272-9"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_NS = uuid.UUID("6f1c6a52-8d55-4e2b-9d0b-7c1e3a0c2f11")


def patient_id(subject: str) -> str:
    """A FHIR id for a CGM subject: the subject id itself when it is a valid id."""
    return subject if _ID.match(subject) else str(uuid.uuid5(_NS, subject))


def cgm_resources(series: CGMSeries) -> Iterator[dict[str, Any]]:
    """A Patient and one Observation per reading of ``series``."""
    pid = patient_id(series.subject_id)
    patient: dict[str, Any] = {"resourceType": "Patient", "id": pid,
                               "identifier": [{"system": "urn:medmeta:cgm-subject", "value": series.subject_id}]}
    yield patient
    for when, value in zip(series.time, series.glucose, strict=True):
        stamp = pd.Timestamp(when)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        yield {
            "resourceType": "Observation", "id": str(uuid.uuid5(_NS, f"{pid}|{stamp.isoformat()}")),
            "status": "final",
            "category": [{"coding": [{"system": t.OBSERVATION_CATEGORY, "code": "laboratory"}]}],
            "code": {"coding": [{"system": t.LOINC, "code": CGM_MASS,
                                 "display": "Glucose [Mass/volume] in Interstitial fluid"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": stamp.isoformat(),
            "valueQuantity": {"value": round(float(value), 2), "unit": "mg/dL", "system": t.UCUM, "code": "mg/dL"},
        }


def cgm_series(tables: FhirTables, min_readings: int = 2) -> dict[str, CGMSeries]:
    """The CGM series of every patient with at least ``min_readings`` measured readings (forecasts left out),
    in mg/dL, keyed by patient id."""
    obs = measurements(tables.observations)
    rows = obs[obs["code"].isin((CGM_MASS, CGM_MOLAR)) & obs["value"].notna() & obs["time"].notna()]
    out: dict[str, CGMSeries] = {}
    for pid, r in rows.groupby("patient_id", sort=True):
        mgdl = np.where(r["code"] == CGM_MOLAR, r["value"].to_numpy(float) * 18.016, r["value"].to_numpy(float))
        times = pd.to_datetime(r["time"], utc=True).dt.tz_localize(None)
        frame = pd.DataFrame({"time": times.to_numpy(), "glucose": mgdl}).sort_values("time")
        frame = frame.drop_duplicates("time")
        if len(frame) >= min_readings:
            out[str(pid)] = CGMSeries(str(pid), pd.DatetimeIndex(frame["time"]), frame["glucose"].to_numpy())
    return out

"""Glucose forecasts as FHIR Observations, for patients with CGM readings (LOINC 99504-3 / 105272-9)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd

from medmeta.fhir import FhirTables, forecast
from medmeta.fhir import terminology as t
from medmeta.fhir.cgm import CGM_MASS, cgm_series
from medmeta.scoring import PatientScores, model_info

_NS = uuid.UUID("4d2a9d61-0c1b-4f5e-a0f4-5b7c2e8d1a93")
#: Horizons written as forecasts (minutes).
HORIZONS = (30, 60)


class GlucoseScorer:
    """The shipped glucose forecaster (or the one in ``model``), adapted per patient on the last day of readings."""

    name = "glucose-forecast"

    def __init__(self, model: str | Path | None = None, adapt_hours: float = 24.0) -> None:
        from medmeta.models import model_dir
        from medmeta.treatment.glucose import GlucoseForecaster

        folder = Path(model) if model else model_dir("glucose")
        self.forecaster = GlucoseForecaster.load(folder)
        self.model = model_info(self.name, folder)
        self.adapt_hours = adapt_hours

    def score(self, tables: FhirTables, *, run_time: str) -> PatientScores:
        series = cgm_series(tables)
        out = PatientScores(skipped={str(p): "no CGM readings" for p in tables.patients["patient_id"]
                                     if str(p) not in series})
        obs = tables.observations
        for pid, s in series.items():
            f = self.forecaster.forecast_latest(s, adapt_hours=self.adapt_hours)
            if f is None:
                out.skipped[pid] = "the last hour of CGM readings is incomplete"
                continue
            last_ids = obs[(obs["patient_id"] == pid) & (obs["code"] == CGM_MASS)].nlargest(12, "time")
            derived = [f"Observation/{i}" for i in last_ids["observation_id"]]
            resources = []
            for h in HORIZONS:
                j = f.horizons.index(h)
                when = (pd.Timestamp(f.origin).tz_localize("UTC") + pd.Timedelta(minutes=h)).isoformat()
                band = None if pd.isna(f.low[j]) else (round(float(f.low[j]), 1), round(float(f.high[j]), 1))
                resources.append(forecast(
                    pid, (t.LOINC, CGM_MASS, "Glucose [Mass/volume] in Interstitial fluid"),
                    round(float(f.glucose[j]), 1), "mg/dL", when, self.model, derived_from=derived, interval=band,
                    rid=str(uuid.uuid5(_NS, f"{self.name}|{pid}|{h}|{run_time}")), issued=run_time))
            out.results[pid] = resources
        return out

"""A small deterministic scorer for testing the batch engine (not a model): last HbA1c carried forward."""

from __future__ import annotations

import os
import time
import uuid

from medmeta.fhir import FhirTables, ModelInfo, forecast
from medmeta.scoring import PatientScores

HBA1C = ("http://loinc.org", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood")


class LastHbA1c:
    name = "test-last-hba1c"
    model = ModelInfo("test-last-hba1c", "1", "0" * 64)

    def score(self, tables: FhirTables, *, run_time: str) -> PatientScores:
        time.sleep(float(os.environ.get("MEDMETA_TEST_SCORER_SLEEP", "0")))
        obs = tables.observations
        a1c = obs[obs["code"] == "4548-4"].sort_values(["patient_id", "time"])
        out = PatientScores()
        last = a1c.groupby("patient_id").tail(1)
        for row in last.itertuples():
            rid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.name}:{row.patient_id}"))
            out.results[row.patient_id] = [forecast(row.patient_id, HBA1C, float(row.value), "%", run_time,
                                                    self.model, derived_from=[f"Observation/{row.observation_id}"],
                                                    rid=rid, issued=run_time)]
        for pid in set(tables.patients["patient_id"]) - set(out.results):
            out.skipped[pid] = "no HbA1c result"
        return out


def make() -> list:
    return [LastHbA1c()]


class FailsOnOnePatient(LastHbA1c):
    """Like :class:`LastHbA1c`, but its code breaks on the record of one patient (``MEDMETA_TEST_BREAKS_ON``)."""

    name = "test-breaks-on-one"
    model = ModelInfo("test-breaks-on-one", "1", "1" * 64)

    def score(self, tables: FhirTables, *, run_time: str) -> PatientScores:
        if os.environ.get("MEDMETA_TEST_BREAKS_ON") in set(tables.patients["patient_id"]):
            raise ZeroDivisionError("a record this model cannot handle")
        return super().score(tables, run_time=run_time)


def make_with_a_failing_model() -> list:
    return [LastHbA1c(), FailsOnOnePatient()]

"""Per-patient longitudinal tasks and population tasks: no leakage in time, by construction."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medmeta.fhir import patient_tasks, population_tasks, read, read_entries
from medmeta.fhir.sources import iter_entries, list_files


@pytest.fixture(scope="module")
def synthea(samples):
    return read(samples / "synthea_fhir_r4")


def test_hba1c_tasks_from_synthea(synthea):
    tasks = patient_tasks(synthea, k_support=3)
    assert len(tasks) >= 8
    names = tasks[0].metadata["features"]
    assert names[:2] == ["previous", "days_since_previous"] and "metformin" in names
    for task in tasks:
        assert task.n_support == 3 and task.n_query >= 1
        assert np.isfinite(task.support_x).all() and np.isfinite(task.query_x[:, :-5]).all()
        # the "previous" feature of each example is the outcome of the example before it
        assert task.support_x[1, 0] == pytest.approx(task.support_y[0])
    assert any(t.query_x[:, names.index("metformin")].any() for t in tasks)  # diabetes medications are seen


def test_no_leakage_in_time(synthea):
    for task in patient_tasks(synthea, k_support=2):
        s, q, f = task.metadata["support_times"], task.metadata["query_times"], task.metadata["feature_times"]
        assert s.max() < q.min()  # every support example precedes every query example
        assert (f < np.concatenate([s, q])).all()  # features come strictly before their example


def test_future_records_cannot_change_the_support_set(synthea, samples, tmp_path):
    """Adding records after the first query time leaves the support set unchanged."""
    task = patient_tasks(synthea, k_support=3)[0]
    pid, cut = task.metadata["patient_id"], task.metadata["query_times"].min()
    late = (cut + pd.Timedelta(seconds=1)).isoformat()
    extra = [{"resourceType": "Observation", "id": f"late-{code}", "status": "final",
              "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
              "subject": {"reference": f"Patient/{pid}"},
              "effectiveDateTime": late, "valueQuantity": {"value": 999.0, "unit": unit,
                                                           "system": "http://unitsofmeasure.org", "code": unit}}
             for code, unit in (("4548-4", "%"), ("2339-0", "mg/dL"), ("39156-5", "kg/m2"))]
    extra.append({"resourceType": "MedicationRequest", "id": "late-insulin", "status": "active", "intent": "order",
                  "subject": {"reference": f"Patient/{pid}"}, "authoredOn": late,
                  "medicationCodeableConcept": {"text": "insulin glargine"}})
    (tmp_path / "extra.json").write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                                      "entry": [{"resource": r} for r in extra]}))
    files = [*list_files(samples / "synthea_fhir_r4").files, tmp_path / "extra.json"]
    tables = read_entries(iter_entries(files))
    assert tables.counts.used["Observation"] == synthea.counts.used["Observation"] + 3
    again = next(t for t in patient_tasks(tables, k_support=3) if t.metadata["patient_id"] == pid)
    np.testing.assert_array_equal(again.support_x, task.support_x)
    np.testing.assert_array_equal(again.support_y, task.support_y)
    assert again.n_query == task.n_query + 1  # the late HbA1c is a new query example, never a support one


def test_population_tasks_by_group():
    frame = pd.DataFrame({"race": ["a"] * 8 + ["b"] * 6 + ["c"] * 2, "dose": np.arange(16.0),
                          "age": [50.0, None] * 8, "weight": np.linspace(60, 90, 16)})
    tasks = population_tasks(frame, "race", "dose", ["age", "weight"], k_support=4, seed=1)
    assert [t.metadata["group"] for t in tasks] == ["a", "b"]  # c is too small
    a = tasks[0]
    assert a.n_support == 4 and a.n_query == 4 and a.support_x.shape[1] == 4
    assert not set(a.metadata["support_ids"]) & set(a.metadata["query_ids"])
    assert set(a.support_y) | set(a.query_y) == set(range(8))
    again = population_tasks(frame, "race", "dose", ["age", "weight"], k_support=4, seed=1)[0]
    np.testing.assert_array_equal(again.support_x, a.support_x)


def test_population_tasks_from_fhir_records(samples, tmp_path):
    """IWPC patients as FHIR -> the warfarin columns -> one task per race, or per indication group."""
    from medmeta.datasets.warfarin import load_iwpc
    from medmeta.fhir import iwpc_frame, iwpc_resources, write_ndjson
    from medmeta.treatment.warfarin_features import indication_group

    csv, _ = load_iwpc(samples / "iwpc_warfarin" / "warfarin.csv")
    write_ndjson((r for row in csv.to_dict("records") for r in iwpc_resources(row)), tmp_path / "export")
    frame = iwpc_frame(read(tmp_path / "export"))
    dosed = frame["dose_mg_week"].notna()
    by_race = population_tasks(frame, "race", "dose_mg_week", ["height_cm", "weight_kg"], k_support=5)
    assert {t.metadata["group"]: t.n_support + t.n_query for t in by_race} == \
        frame[dosed].groupby("race").size()[lambda n: n >= 6].to_dict()
    groups = indication_group(frame).rename("indication")
    by_indication = population_tasks(frame, groups, "dose_mg_week", ["height_cm", "weight_kg"], k_support=5)
    expected = indication_group(csv)[csv["dose_mg_week"].notna()].value_counts()
    assert {t.metadata["group"]: t.n_support + t.n_query for t in by_indication} == \
        expected[expected >= 6].to_dict()
    assert all(t.metadata["group_by"] == "indication" for t in by_indication)

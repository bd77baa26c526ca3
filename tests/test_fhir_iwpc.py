"""IWPC -> FHIR -> the IWPC columns again: the warfarin model sees the same data either way."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from medmeta.cli import app
from medmeta.datasets.warfarin import load_iwpc
from medmeta.fhir import iwpc_frame, iwpc_resources, read
from medmeta.fhir.iwpc import COLUMNS


def round_trip(csv, out):
    result = CliRunner().invoke(app, ["fhir", "from-iwpc", str(csv), "--out", str(out)])
    expected = load_iwpc(csv).data[list(COLUMNS)]
    tables = read(out)
    assert not tables.rejected and tables.counts.add_up()
    return result, expected, iwpc_frame(tables)


def test_round_trip_every_sample_row(samples, tmp_path):
    result, expected, got = round_trip(samples / "iwpc_warfarin" / "warfarin.csv", tmp_path)
    assert result.exit_code == 0, result.output
    assert "500 CSV rows = 500 patients written + 0 rejected" in result.output
    pd.testing.assert_frame_equal(got, expected)


def test_round_trip_every_row_of_the_full_file(full_data, tmp_path):
    result, expected, got = round_trip(full_data / "iwpc_warfarin" / "warfarin.csv", tmp_path)
    assert len(expected) == 4566
    assert result.exit_code == 1  # the file's blank line is reported as a rejected row
    assert "4,567 CSV rows = 4,566 patients written + 1 rejected" in result.output
    assert "empty row" in (tmp_path / "rejects.csv").read_text()
    pd.testing.assert_frame_equal(got, expected)


def test_rejected_csv_rows_are_reported(samples, tmp_path):
    lines = (samples / "iwpc_warfarin" / "warfarin.csv").read_text(encoding="utf-8-sig").splitlines()
    lines[3] = lines[3].replace("60 - 69", "sixty", 1) if "60 - 69" in lines[3] else lines[3] + ",extra"
    csv = tmp_path / "bad.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["fhir", "from-iwpc", str(csv), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "499 patients written + 1 rejected" in result.output
    assert "line 4" in result.output and "bad.csv,4," in (tmp_path / "out" / "rejects.csv").read_text()


def test_resources_are_valid_ig_form_and_unknown_is_not_not_taken(samples):
    frame = load_iwpc(samples / "iwpc_warfarin" / "warfarin.csv").data
    row = frame[frame["amiodarone"].eq(False) & frame["aspirin"].isna() & frame["cyp2c9"].notna()
                & frame["vkorc1_1639"].notna()].iloc[0].to_dict()
    resources = {r["id"]: r for r in iwpc_resources(row)}
    sid = row["subject_id"]
    assert resources[f"{sid}-amiodarone"]["status"] == "not-taken"
    assert f"{sid}-aspirin" not in resources  # unknown: nothing is asserted
    geno = resources[f"{sid}-cyp2c9"]
    assert geno["code"]["coding"][0]["code"] == "84413-4"
    assert geno["component"][0]["code"]["coding"][0]["code"] == "48018-6"
    assert geno["valueCodeableConcept"]["coding"][0]["code"] == f"CYP2C9{row['cyp2c9']}"
    assert resources[f"{sid}-vkorc1-1639"]["valueCodeableConcept"]["text"].startswith("VKORC1 rs9923231 ")
    assert json.dumps(resources[f"{sid}-warfarin"]).count("Condition/") == sum(
        bool(row[c]) for c in COLUMNS if c.startswith("indication_") and pd.notna(row[c]))


def test_hospital_style_records_map_to_the_same_columns(tmp_path):
    pid = "h1"
    res = [
        {"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1950-06-01"},
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": f"Patient/{pid}"},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
         "onsetDateTime": "2010-01-01"},
        {"resourceType": "Condition", "id": "c2", "subject": {"reference": f"Patient/{pid}"},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "49436004"}]}},
        {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
         "subject": {"reference": f"Patient/{pid}"}, "authoredOn": "2021-01-01",
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                   "code": "855332", "display": "Warfarin Sodium 5 MG Oral Tablet"}]},
         "reasonReference": [{"reference": "Condition/c2"}],
         "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                                "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"}}]}]},
        {"resourceType": "MedicationRequest", "id": "m2", "status": "active", "intent": "order",
         "subject": {"reference": f"Patient/{pid}"}, "authoredOn": "2021-01-01",
         "medicationCodeableConcept": {"text": "Amiodarone hydrochloride 200 MG Oral Tablet"}},
    ]
    (tmp_path / "b.json").write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                                 "entry": [{"resource": r} for r in res]}))
    row = iwpc_frame(read(tmp_path / "b.json")).iloc[0]
    assert bool(row["diabetes"]) and pd.isna(row["heart_failure"])  # bool(pd.NA) raises
    assert bool(row["indication_afib"]) and not bool(row["indication_dvt"])
    assert bool(row["amiodarone"]) and pd.isna(row["aspirin"])
    assert row["dose_mg_week"] == 35.0 and row["sex"] == "male" and row["age_decade"] == 7

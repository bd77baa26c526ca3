"""Results written back as valid FHIR R4: builders, NDJSON per type, transaction Bundles."""

from __future__ import annotations

import json

import pytest

from medmeta.errors import DataError
from medmeta.fhir import (
    ModelInfo,
    NdjsonWriter,
    dose_proposal,
    forecast,
    provenance,
    read,
    risk_assessment,
    transaction_bundles,
    validate_r4,
)
from medmeta.fhir.results import DECISION_SUPPORT

MODEL = ModelInfo("medmeta_warfarin_maml", "0.1.0", "0" * 64)
WARFARIN = ("http://www.nlm.nih.gov/research/umls/rxnorm", "11289", "warfarin")


def test_builders_make_valid_resources_that_say_decision_support():
    ra = risk_assessment("p1", {("http://snomed.info/sct", "233604007", "Pneumonia"): 0.72}, MODEL,
                         basis=["ImagingStudy/i1"])
    mr = dose_proposal("p1", WARFARIN, 31.5, "mg", MODEL, interval=(24.0, 40.0, 0.8),
                       supporting=["Observation/p1-cyp2c9", "Observation/p1-vkorc1-1639"], factors=["VKORC1 A/A"])
    fc = forecast("p1", ("http://loinc.org", "2339-0", "Glucose"), 142.0, "mg/dL", "2024-01-01T10:30:00+00:00",
                  MODEL, derived_from=["Observation/g1"], interval=(120.0, 160.0))
    pv = provenance([f"{r['resourceType']}/{r['id']}" for r in (ra, mr, fc)], MODEL)
    for r in (ra, mr, fc, pv):
        validate_r4(r)
    assert ra["prediction"][0]["probabilityDecimal"] == 0.72 and ra["method"]["coding"][0]["version"] == "0.1.0"
    assert ra["basis"] == [{"reference": "ImagingStudy/i1"}]
    assert mr["intent"] == "proposal" and mr["supportingInformation"][0]["reference"] == "Observation/p1-cyp2c9"
    assert mr["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 31.5
    assert "80% prediction interval 24.0-40.0" in mr["dosageInstruction"][0]["text"]
    assert all(DECISION_SUPPORT in x["note"][0]["text"] for x in (ra, mr, fc))
    assert fc["derivedFrom"] == [{"reference": "Observation/g1"}]
    assert len(pv["target"]) == 3 and pv["entity"][0]["what"]["identifier"]["value"] == "0" * 64
    assert "medmeta_warfarin_maml 0.1.0" in pv["agent"][0]["who"]["display"]


def test_invalid_resources_are_refused_before_writing(tmp_path):
    with pytest.raises(DataError, match="status"):
        validate_r4({"resourceType": "Observation", "id": "x", "code": {"text": "t"}})
    with pytest.raises(DataError, match="unknown resourceType"):
        validate_r4({"resourceType": "Nonsense"})
    with NdjsonWriter(tmp_path) as w, pytest.raises(DataError):
        w.write({"resourceType": "Patient", "id": "bad id with spaces"})
    assert not (tmp_path / "Patient.ndjson").exists() or not (tmp_path / "Patient.ndjson").read_text()


def test_ndjson_per_type_with_manifest_reads_back(tmp_path):
    patient = {"resourceType": "Patient", "id": "p1"}
    ra = risk_assessment("p1", {("http://snomed.info/sct", "1", "x"): 0.5}, MODEL)
    mr = dose_proposal("p1", WARFARIN, 35.0, "mg", MODEL)
    with NdjsonWriter(tmp_path) as w:
        w.write_all([patient, ra, mr])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {o["type"] for o in manifest["output"]} == {"Patient", "RiskAssessment", "MedicationRequest"}
    tables = read(tmp_path)
    assert tables.counts.totals() == {"read": 3, "used": 2, "ignored": 1, "rejected": 0}
    assert tables.medications.iloc[0]["intent"] == "proposal" and tables.medications.iloc[0]["dose"] == 35.0


def test_transaction_bundles_chunk_and_put_by_id():
    resources = [{"resourceType": "Patient", "id": f"p{i}"} for i in range(5)] + [{"resourceType": "Patient"}]
    bundles = list(transaction_bundles(resources, chunk_size=2))
    assert [len(b["entry"]) for b in bundles] == [2, 2, 2]
    assert bundles[0]["entry"][0]["request"] == {"method": "PUT", "url": "Patient/p0"}
    assert bundles[-1]["entry"][-1]["request"] == {"method": "POST", "url": "Patient"}
    for b in bundles:
        validate_r4(b)

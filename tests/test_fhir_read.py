"""Reading FHIR sources into tables: counts, columns, units, and every kind of bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from medmeta.cli import app
from medmeta.fhir import read
from medmeta.fhir.normalise import COLUMNS

PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950-05-01"}


def obs(oid: str, code: str, value: float, unit: str, when: str = "2020-01-01T10:00:00+00:00", **extra):
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
            **extra}


def write_ndjson(folder: Path, name: str, lines: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_synthea_sample_bundles(samples):
    t = read(samples / "synthea_fhir_r4")
    assert t.counts.add_up() and t.counts.totals()["read"] > 3000
    for name, cols in COLUMNS.items():
        assert tuple(getattr(t, name).columns) == cols
    hba1c = t.observations[t.observations["code"] == "4548-4"]
    assert len(hba1c) > 20 and set(hba1c["unit"]) == {"%"}
    bp = t.observations[t.observations["panel_code"] == "55284-4"]
    assert {"8480-6", "8462-4"} <= set(bp["code"]) and set(bp["unit"].dropna()) == {"mm[Hg]"}
    assert str(t.observations["time"].dtype).startswith("datetime64") and t.patients["age"].between(0, 120).all()
    assert t.patients["patient_id"].is_unique and len(t.patients) == 14


def test_bulk_export_folder_skips_log_and_counts_add_up(samples):
    t = read(samples / "fhir_bulk_ndjson_10_patients")
    assert t.counts.add_up() and not t.rejected
    assert [Path(p).name for p, _ in t.counts.skipped_files] == ["log.ndjson"]
    assert len(t.patients) == 13 and t.counts.used["MedicationRequest"] == 1745
    assert t.counts.ignored["Encounter"] == 1215


def test_several_files_per_type_with_manifest_and_gzip(tmp_path):
    write_ndjson(tmp_path, "Patient.000.ndjson", [PATIENT])
    a = write_ndjson(tmp_path, "Observation.000.ndjson", [obs("o1", "2339-0", 5.5, "mmol/L")])
    b = write_ndjson(tmp_path, "Observation.001.ndjson", [obs("o2", "2339-0", 99.0, "mg/dL")])
    with gzip.open(tmp_path / "Observation.002.ndjson.gz", "wt") as f:
        f.write(json.dumps(obs("o3", "4548-4", 53.0, "mmol/mol")) + "\n")
    manifest = {"transactionTime": "2024-01-01T00:00:00Z", "request": "x", "requiresAccessToken": False,
                "output": [{"type": "Patient", "url": "Patient.000.ndjson"},
                           {"type": "Observation", "url": a.name}, {"type": "Observation", "url": b.name},
                           {"type": "Observation", "url": "http://server/files/Observation.002.ndjson.gz"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "stray.ndjson").write_text("not read: not in the manifest\n")
    t = read(tmp_path)
    assert (str(tmp_path / "stray.ndjson"), "not listed in the Bulk Data manifest") in t.counts.skipped_files
    values = t.observations.set_index("observation_id")["value"]
    assert values["o1"] == pytest.approx(99.088)  # 5.5 mmol/L glucose in mg/dL
    assert values["o2"] == 99.0
    assert values["o3"] == pytest.approx(0.09148 * 53 + 2.152)  # IFCC mmol/mol -> NGSP %
    assert set(t.observations["unit"]) == {"mg/dL", "%"}
    assert t.observations.set_index("observation_id").loc["o1", "unit_raw"] == "mmol/L"


def test_export_error_files_and_files_named_freely_are_read(tmp_path):
    """Bulk Data file names are free: the type is in the records; the server's error files become rejects."""
    write_ndjson(tmp_path, "export-1.ndjson", [PATIENT])
    write_ndjson(tmp_path, "export-2.ndjson", [obs("o1", "2339-0", 5.5, "mmol/L")])
    write_ndjson(tmp_path, "notes.ndjson", [{"note": "not FHIR"}])
    t = read(tmp_path)
    assert t.counts.used["Patient"] == 1 and t.counts.used["Observation"] == 1
    assert [(Path(f).name, why) for f, why in t.counts.skipped_files] == [
        ("notes.ndjson", "not a Bundle, nor NDJSON of FHIR resources")]

    problem = {"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": "processing", "diagnostics": "Observation/o9: cannot be read"}]}
    write_ndjson(tmp_path, "errors.ndjson", [problem])
    manifest = {"transactionTime": "2024-01-01T00:00:00Z", "request": "x", "requiresAccessToken": False,
                "output": [{"type": "Patient", "url": "export-1.ndjson"},
                           {"type": "Observation", "url": "export-2.ndjson"}],
                "error": [{"type": "OperationOutcome", "url": "errors.ndjson"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    t = read(tmp_path)
    assert t.counts.add_up() and t.counts.used["Observation"] == 1
    [r] = t.rejected
    assert r.source.endswith("errors.ndjson") and r.row == 1
    assert r.reason == "the server reported: error processing: Observation/o9: cannot be read"


def test_values_that_are_not_numbers_or_dates_are_kept_as_text_and_reported(tmp_path):
    quantity = {k: v for k, v in obs("x", "2339-0", 1, "mg/dL").items() if k != "valueQuantity"}
    observations = [{**quantity, "id": f"o{i}", **value} for i, value in enumerate([
        {"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 2}}}, {"valueDateTime": "2020-02-02"},
        {"valuePeriod": {"start": "2020-01-01"}}, {"valueTime": "10:00:00"}])]
    conditions = [{"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                   "onsetAge": {"value": 40, "unit": "a"}, "abatementString": "in remission"},
                  {"resourceType": "Condition", "id": "c2", "subject": {"reference": "Patient/p1"},
                   "abatementPeriod": {"start": "2020-06-01", "end": "2021-01-01"}}]
    request = {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
               "medicationReference": {"reference": "Medication/x", "display": "warfarin 5 mg"},
               "subject": {"reference": "Patient/p1"},
               "dosageInstruction": [{"doseAndRate": [{"doseRange": {"low": {"value": 1}, "high": {"value": 2}}}]}]}
    write_ndjson(tmp_path, "Patient.ndjson", [PATIENT])
    write_ndjson(tmp_path, "Observation.ndjson", observations)
    write_ndjson(tmp_path, "Condition.ndjson", conditions)
    write_ndjson(tmp_path, "MedicationRequest.ndjson", [request])
    t = read(tmp_path)
    assert t.counts.add_up() and not t.rejected
    text = t.observations.set_index("observation_id")["value_text"]
    assert text["o0"] == '{"numerator":{"value":1},"denominator":{"value":2}}' and text["o3"] == "10:00:00"
    assert str(t.conditions.set_index("condition_id").loc["c2", "abatement"].date()) == "2021-01-01"
    assert t.medications.iloc[0]["display"] == "warfarin 5 mg" and "low" in t.medications.iloc[0]["dosage_text"]
    issues = set(t.unmapped["issue"])
    assert {"valueRatio kept as text (no numeric value)", "valueTime kept as text (no numeric value)",
            "onsetAge is not a date (see clinical_status)", "abatementString is not a date (see clinical_status)",
            "doseRange kept as text (no single dose)",
            "medicationReference: the drug's code is not read (display kept)"} <= issues


def test_resources_of_a_rejected_patient_say_so(tmp_path):
    write_ndjson(tmp_path, "Patient.ndjson", [{**PATIENT, "gender": "F"}])
    write_ndjson(tmp_path, "Observation.ndjson", [obs("o1", "2339-0", 1, "mg/dL")])
    t = read(tmp_path)
    assert [r.reason for r in t.rejected][1:] == ["its patient 'p1' was rejected (see that Patient)"]


def test_bundle_file_resolves_urn_uuid_references(tmp_path):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:aaa", "resource": {**PATIENT, "id": "aaa"}},
        {"fullUrl": "urn:uuid:bbb", "resource": {**obs("bbb", "8302-2", 1.70, "m"),
                                                  "subject": {"reference": "urn:uuid:aaa"}}}]}
    path = tmp_path / "b.json.gz"
    path.write_bytes(gzip.compress(orjson.dumps(bundle)))
    t = read(path)
    row = t.observations.iloc[0]
    assert row["patient_id"] == "aaa" and row["value"] == pytest.approx(170.0) and row["unit"] == "cm"


BAD = [
    ("malformed JSON", '{"resourceType": "Patient", "id": "x"', "malformed JSON"),
    ("missing resourceType", {"id": "x1", "status": "final"}, "missing resourceType"),
    ("wrong resourceType", {**obs("x2", "2339-0", 1, "mg/dL"), "resourceType": "observation"}, "invalid resourceType"),
    ("missing required field", {k: v for k, v in obs("x3", "2339-0", 1, "mg/dL").items() if k != "status"}, "status"),
    ("invalid date", obs("x4", "2339-0", 1, "mg/dL", when="2021-02-30"), "effectiveDateTime"),
    ("date-time without zone", obs("x5", "2339-0", 1, "mg/dL", when="2021-02-03T10:00:00"), "effectiveDateTime"),
    ("unknown unit", obs("x6", "2339-0", 1, "furlong"), "cannot be converted"),
    ("value without unit", {**obs("x7", "2339-0", 1, "mg/dL"), "valueQuantity": {"value": 1}}, "without a unit"),
    ("duplicate id", obs("ok", "2339-0", 2, "mg/dL"), "duplicate id"),
    ("absent patient", {**obs("x8", "2339-0", 1, "mg/dL"), "subject": {"reference": "Patient/nobody"}},
     "not in the source"),
    ("wrong type", {**obs("x9", "2339-0", 1, "mg/dL"), "status": 3}, "status"),
    ("unknown element", {**obs("x10", "2339-0", 1, "mg/dL"), "valueQuantiy": {}}, "unknown element"),
    ("two values", {**obs("x11", "2339-0", 1, "mg/dL"), "valueString": "a"}, "more than one value"),
    ("condition without subject", {"resourceType": "Condition", "id": "c1"}, "subject"),
    ("statement without medication", {"resourceType": "MedicationStatement", "id": "m1", "status": "active",
                                      "subject": {"reference": "Patient/p1"}}, "medicationCodeableConcept"),
    ("bad request status", {"resourceType": "MedicationRequest", "id": "m2", "status": "taken", "intent": "order",
                            "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": "Patient/p1"}},
     "status"),
    ("bad gender", {**PATIENT, "id": "p2", "gender": "F"}, "gender"),
]


def test_every_kind_of_bad_input_is_rejected_with_file_line_id_and_reason(tmp_path):
    write_ndjson(tmp_path, "Patient.000.ndjson", [PATIENT])
    lines = [obs("ok", "2339-0", 1, "mg/dL"), *(x for _, x, _ in BAD)]
    write_ndjson(tmp_path, "Observation.000.ndjson", lines)
    t = read(tmp_path)
    assert t.counts.add_up()
    assert t.counts.totals() == {"read": 2 + len(BAD), "used": 2, "ignored": 0, "rejected": len(BAD)}
    by_line = {r.row: r for r in t.rejected}
    for line, (what, resource, reason) in enumerate(BAD, start=2):
        r = by_line[line]
        assert reason in r.reason, (what, r)
        assert r.source.endswith("Observation.000.ndjson")
        if isinstance(resource, dict) and "id" in resource:
            assert r.record_id == resource["id"], what
    assert list(t.observations["observation_id"]) == ["ok"]


def test_unknown_codes_are_kept_and_reported(tmp_path):
    odd = obs("o9", "12345-6", 3.0, "bananas")
    odd["code"]["coding"][0]["system"] = "http://example.org/local"
    write_ndjson(tmp_path, "Patient.ndjson", [PATIENT])
    write_ndjson(tmp_path, "Observation.ndjson", [odd])
    t = read(tmp_path)
    row = t.observations.iloc[0]
    assert (row["code"], row["value"], row["unit"]) == ("12345-6", 3.0, "bananas")
    issues = set(zip(t.unmapped["issue"], t.unmapped["code"], strict=True))
    assert ("code not LOINC", "12345-6") in issues


def test_cli_read_writes_tables_rejects_and_exit_status(tmp_path):
    src = tmp_path / "src"
    write_ndjson(src, "Patient.ndjson", [PATIENT])
    write_ndjson(src, "Observation.ndjson", [obs("o1", "2339-0", 1, "mg/dL"), "{oops"])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["fhir", "read", str(src), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "read 3 = used 2 + ignored 0" in result.output and "rejected 1" in result.output
    rejects = (out / "rejects.csv").read_text().splitlines()
    assert len(rejects) == 2 and "Observation.ndjson,2," in rejects[1] and "malformed JSON" in rejects[1]
    counts = json.loads((out / "counts.json").read_text())
    assert counts["read"] == counts["used"] + counts["ignored"] + counts["rejected"] == 3
    assert (out / "observations.csv").is_file() and (out / "pgx.csv").is_file()
    (src / "Observation.ndjson").write_text(json.dumps(obs("o1", "2339-0", 1, "mg/dL")) + "\n")
    assert CliRunner().invoke(app, ["fhir", "read", str(src), "--out", str(out)]).exit_code == 0


@pytest.mark.slow
def test_all_synthea_bundles(full_data):
    t = read(full_data / "synthea_fhir_r4" / "bundles")
    assert t.counts.totals()["read"] == 77_944 and t.counts.add_up()
    assert len(t.patients) == 200 and t.counts.used["Patient"] == 200
    # Synthea writes some eGFR in mL/min under the per-1.73 m2 code, and some BP components without a unit.
    assert {r.reason.split(" (")[0][:40] for r in t.rejected} <= {
        "unit 'mL/min' cannot be converted to mL/", "value without a unit"}

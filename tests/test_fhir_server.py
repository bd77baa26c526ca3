"""Reading from and writing to a FHIR server (the test server of tests/fhir_server.py on 127.0.0.1)."""

from __future__ import annotations

import gzip
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from medmeta.cli import app
from medmeta.fhir import FhirClient, FhirServerError, post_resources, read, transaction_bundles
from medmeta.fhir.http import retry_after_seconds
from medmeta.fhir.writers import post_bundle


@pytest.fixture
def loaded(fhir_server, samples):
    folder = samples / "fhir_bulk_ndjson_10_patients"
    resources = [orjson.loads(line) for name in ("Patient", "Condition", "MedicationRequest", "Encounter")
                 for line in gzip.decompress((folder / f"{name}.000.ndjson.gz").read_bytes()).splitlines()]
    fhir_server.load(resources)
    return fhir_server


def test_search_follows_next_links(loaded):
    with FhirClient(loaded.url) as client:
        entries = list(client.search("Condition", {"_count": "100"}))
    assert len(entries) == 555 and len({e.resource["id"] for e in entries}) == 555
    pages = [p for m, p, _ in loaded.requests if p == "/Condition"]
    assert len(pages) == 6  # 100 per page


def test_read_server_by_search_equals_reading_the_files(loaded, samples):
    by_search = read(loaded.url)
    from_files = read(samples / "fhir_bulk_ndjson_10_patients")
    assert by_search.counts.used == from_files.counts.used
    assert sorted(by_search.conditions["condition_id"]) == sorted(from_files.conditions["condition_id"])


def test_bulk_export_polls_honouring_retry_after_and_downloads(loaded):
    loaded.polls, loaded.retry_after = 2, "1"
    start = time.monotonic()
    tables = read(loaded.url, bulk=True)
    assert time.monotonic() - start >= 2.0  # two 202 answers, each asking to wait 1 s
    assert tables.counts.used["Condition"] == 555 and tables.counts.used["Patient"] == 13
    kick = next(h for m, p, h in loaded.requests if p == "/$export")
    assert kick["prefer"] == "respond-async"
    assert sum(p.startswith("/_status/") for _, p, _ in loaded.requests) == 3


def test_bearer_token(loaded):
    loaded.token = "s3cret"
    with pytest.raises(FhirServerError) as err:
        read(loaded.url)
    assert err.value.status == 401 and "bearer token" in str(err.value)
    tables = read(loaded.url, token="s3cret", bulk=True)
    assert tables.counts.used["Patient"] == 13
    assert all(h.get("authorization") == "Bearer s3cret" for _, _, h in loaded.requests[1:])


def test_transaction_post_and_outcome_on_invalid_input(fhir_server):
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female"}
    obs = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
           "subject": {"reference": "Patient/p1"}}
    responses = post_resources([patient, obs], fhir_server.url, chunk_size=1)
    assert [b["type"] for b in responses] == ["transaction-response"] * 2
    assert responses[0]["entry"][0]["response"]["status"] == "201 Created"
    assert fhir_server.resources["Observation"]["o1"]["subject"]["reference"] == "Patient/p1"
    bad = next(transaction_bundles([obs]))
    bad["entry"][0]["resource"] = {k: v for k, v in obs.items() if k != "status"}
    with httpx.Client() as client, pytest.raises(FhirServerError) as err:
        post_bundle(client, fhir_server.url, bad)
    assert err.value.status == 400 and err.value.outcome["resourceType"] == "OperationOutcome"
    assert "status" in str(err.value)


def test_reads_retry_429_and_5xx_honouring_retry_after(loaded):
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=1), usegmt=True)
    loaded.fail_next(429, retry_after=soon)  # an HTTP date
    loaded.fail_next(503)  # no Retry-After: the client's back-off
    start = time.monotonic()
    with FhirClient(loaded.url, backoff_s=0.1) as client:
        patients = list(client.search("Patient"))
    assert len(patients) == 13 and time.monotonic() - start >= 0.1
    assert [p for _, p, _ in loaded.requests] == ["/Patient"] * 3

    loaded.fail_next(502)  # during the Bulk Data flow too: kick-off, polling, downloads
    loaded.polls = 1
    assert read(loaded.url, bulk=True).counts.used["Patient"] == 13

    loaded.fail_next(503, times=3)
    with FhirClient(loaded.url, retries=2, backoff_s=0) as client, pytest.raises(FhirServerError) as err:
        list(client.search("Patient"))
    assert err.value.status == 503 and "injected 503" in str(err.value)


def test_retry_after_as_seconds_or_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0  # in the past: at once
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None


def test_bulk_export_error_files_are_reported_as_rejects(loaded, tmp_path):
    loaded.export_errors = [{"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "exception", "diagnostics": "Observation export failed for 2 resources"}]}]
    with FhirClient(loaded.url) as client:
        tables = client.read(bulk=True, out=tmp_path / "export")
    manifest = orjson.loads((tmp_path / "export" / "manifest.json").read_bytes())
    assert [e["url"] for e in manifest["error"]] == ["error.OperationOutcome.000.ndjson"]
    [reject] = tables.rejected
    assert reject.source == str(tmp_path / "export" / "error.OperationOutcome.000.ndjson")
    assert "Observation export failed for 2 resources" in reject.reason
    assert tables.counts.used["Patient"] == 13 and tables.counts.add_up()


def test_cli_post(fhir_server, samples, tmp_path):
    out = tmp_path / "fhir"
    CliRunner().invoke(app, ["fhir", "from-iwpc", str(samples / "iwpc_warfarin" / "warfarin.csv"), "--out", str(out)])
    result = CliRunner().invoke(app, ["fhir", "post", str(out), "--url", fhir_server.url, "--chunk-size", "2000"])
    assert result.exit_code == 0, result.output
    assert len(fhir_server.resources["Patient"]) == 500
    assert "in 6 transaction Bundle(s)" in result.output

    with (out / "Patient.ndjson").open("a") as f:  # a broken line and an invalid resource: not sent, reported
        f.write('{"resourceType": "Patient", "id": \n')
        f.write(orjson.dumps({"resourceType": "Patient", "id": "bad", "birthDate": "1950-13-45"}).decode() + "\n")
    result = CliRunner().invoke(app, ["fhir", "post", str(out), "--url", fhir_server.url, "--chunk-size", "2000"])
    assert result.exit_code == 1 and "+ rejected 2" in " ".join(result.output.split())
    rejects = (out / "post-rejects.csv").read_text().splitlines()
    assert rejects[1].startswith(f"{out / 'Patient.ndjson'},501,,,malformed JSON")
    assert rejects[2].startswith(f"{out / 'Patient.ndjson'},502,bad,birthDate,\"invalid Patient")
    assert "bad" not in fhir_server.resources["Patient"]

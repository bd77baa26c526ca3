"""Reading from and writing to a FHIR server (the test server of tests/fhir_server.py on 127.0.0.1)."""

from __future__ import annotations

import gzip
import time

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from medmeta.cli import app
from medmeta.fhir import FhirClient, FhirServerError, post_resources, read, transaction_bundles
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


def test_injected_failures_reach_the_client(fhir_server):
    fhir_server.fail_next(429, retry_after="2")
    fhir_server.fail_next(503)
    with httpx.Client() as client:
        first = client.get(f"{fhir_server.url}/Patient")
        second = client.get(f"{fhir_server.url}/Patient")
        third = client.get(f"{fhir_server.url}/Patient")
    assert (first.status_code, first.headers["Retry-After"]) == (429, "2")
    assert second.status_code == 503 and third.status_code == 200


def test_cli_post(fhir_server, samples, tmp_path):
    out = tmp_path / "fhir"
    CliRunner().invoke(app, ["fhir", "from-iwpc", str(samples / "iwpc_warfarin" / "warfarin.csv"), "--out", str(out)])
    result = CliRunner().invoke(app, ["fhir", "post", str(out), "--url", fhir_server.url, "--chunk-size", "2000"])
    assert result.exit_code == 0, result.output
    assert len(fhir_server.resources["Patient"]) == 500
    assert "in 6 transaction Bundle(s)" in result.output

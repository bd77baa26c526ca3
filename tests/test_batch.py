"""The batch engine: partitions, exactly-once results, resume after SIGKILL, Dask workers, write-back."""

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from dask.distributed import LocalCluster

from medmeta.batch import BatchConfig, run_batch
from medmeta.batch.shuffle import partition_of, patient_key, routing_key
from medmeta.errors import MedmetaError
from medmeta.fhir import FhirServerError
from medmeta.fhir.sources import Entry

TESTS = Path(__file__).parent
SCORERS = "batch_scorers:make"  # tests/batch_scorers.py; pytest puts tests/ on sys.path
RUN_TIME = "2026-11-25T00:00:00+00:00"  # the same clock in runs compared record for record


@pytest.fixture(scope="module")
def source(samples, tmp_path_factory):
    """The sample Bundles and the sample Bulk export in one folder: both kinds of input in one run."""
    root = tmp_path_factory.mktemp("source")
    for p in (samples / "synthea_fhir_r4" / "bundles").iterdir():
        (root / p.name).symlink_to(p)
    for p in (samples / "fhir_bulk_ndjson_10_patients").glob("*.ndjson.gz"):
        (root / p.name).symlink_to(p)
    return root


def run(source, output, **kw):
    cfg = BatchConfig(source=str(source), output=Path(output), scorers=kw.pop("scorers", SCORERS),
                      partitions=kw.pop("partitions", 5), run_time=RUN_TIME, **kw)
    return run_batch(cfg, show_progress=False)


def records(output: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(output.glob("*.ndjson"))}


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    return out, run(source, out)


def test_every_patient_exactly_once_and_counts_add_up(reference):
    out, manifest = reference
    outcomes = [orjson.loads(line) for line in (out / "outcomes.ndjson").read_bytes().splitlines()]
    patients = [o["patient"] for o in outcomes]
    assert len(patients) == len(set(patients)) == 14 + 13
    c = manifest["counts"]
    assert c["patients"] == {"read": 27, "scored": 12, "skipped": 15, "rejected": 0}
    assert sum(c["patients_skipped_by_reason"].values()) == 15
    assert c["resources"]["read"] == c["resources"]["used"] + c["resources"]["ignored"] + c["resources"]["rejected"]
    forecasts = [orjson.loads(line) for line in (out / "Observation.ndjson").read_bytes().splitlines()]
    assert len(forecasts) == c["results"]["Observation"] == 12
    assert {f["subject"]["reference"][8:] for f in forecasts} == {o["patient"] for o in outcomes
                                                                   if o["status"] == "scored"}
    prov = orjson.loads((out / "Provenance.ndjson").read_bytes())
    assert len(prov["target"]) == 12 and prov["recorded"] == manifest["run_time"]
    assert {i["sha256"] for i in manifest["inputs"]} and all(len(i["sha256"]) == 64 for i in manifest["inputs"])
    assert manifest["models"] == [{"name": "test-last-hba1c", "version": "1", "sha256": "0" * 64}]


def test_rerun_is_a_no_op_with_the_same_output(source, reference):
    out, _ = reference
    before = records(out)
    run(source, out)
    assert records(out) == before


def test_small_shuffle_buffer_gives_the_same_records(source, reference, tmp_path, monkeypatch):
    """Spill files appended a line at a time (many gzip members) read back as the same records."""
    monkeypatch.setattr("medmeta.batch.shuffle.SPILL_BUFFER", 1)
    run(source, tmp_path)
    assert records(tmp_path) == records(reference[0])


def test_other_arguments_cannot_reuse_an_output_folder(source, reference):
    out, _ = reference
    with pytest.raises(MedmetaError, match="holds another run"):
        run(source, out, partitions=2)


def test_two_dask_worker_processes_give_the_same_records(source, reference, tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        manifest = run(source, tmp_path, scheduler=cluster.scheduler_address)
    assert manifest["engine"]["workers"] == 2
    ref_out, ref_manifest = reference
    assert records(tmp_path) == records(ref_out)
    assert manifest["counts"] == ref_manifest["counts"]


def test_two_local_worker_processes_give_the_same_records(source, reference, tmp_path):
    """``medmeta batch --workers 2``: the LocalCluster that run_batch starts itself."""
    manifest = run(source, tmp_path, workers=2)
    assert manifest["engine"] == {**manifest["engine"], "scheduler": "local", "workers": 2}
    assert records(tmp_path) == records(reference[0])


def test_models_are_built_once_per_worker_process(monkeypatch):
    from medmeta.batch import partition

    built = []
    monkeypatch.setattr("batch_scorers.make", lambda: built.append(1) or [object()])
    monkeypatch.setattr(partition, "_SCORERS", {})
    first = partition.load_scorers(SCORERS)
    assert partition.load_scorers(SCORERS) is first and built == [1]


def start_run(source, output) -> subprocess.Popen:
    """The batch job in a process of its own (its models take 1 s a partition), to be killed."""
    script = (f"import sys; sys.path.insert(0, {str(TESTS)!r});"
              "from pathlib import Path; from medmeta.batch import BatchConfig, run_batch;"
              f"run_batch(BatchConfig(source={str(source)!r}, output=Path({str(output)!r}), scorers={SCORERS!r},"
              f" partitions=5, run_time={RUN_TIME!r}), show_progress=False)")
    env = {**os.environ, "MEDMETA_TEST_SCORER_SLEEP": "1.0"}
    return subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)


def test_killed_again_and_again_at_any_stage_the_result_is_the_same(source, reference, tmp_path):
    """SIGKILL right after the plan is written (during the shuffle), a little later, and later still."""
    for delay in (0.0, 0.3, 1.5):
        proc = start_run(source, tmp_path)
        deadline = time.monotonic() + 120
        while proc.poll() is None and not (tmp_path / ".work" / "plan.json").exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    manifest = run(source, tmp_path)
    ref_out, ref_manifest = reference
    assert records(tmp_path) == records(ref_out)
    assert manifest["counts"] == ref_manifest["counts"]


def test_resume_after_sigkill_completes_only_the_rest(source, reference, tmp_path):
    proc = start_run(source, tmp_path)
    parts = tmp_path / ".work" / "parts"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("part-?????"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name for p in parts.glob("part-?????")}
    assert 2 <= len(done_before) < 5, done_before  # killed mid-run
    assert not (tmp_path / "manifest.json").exists()

    mtimes = {p.name: (p / "summary.json").stat().st_mtime_ns for p in parts.glob("part-?????")}
    manifest = run(source, tmp_path)
    assert {n: (parts / n / "summary.json").stat().st_mtime_ns for n in done_before} == \
        {n: mtimes[n] for n in done_before}  # finished partitions were not redone
    ref_out, ref_manifest = reference
    assert records(tmp_path) == records(ref_out)
    assert manifest["counts"] == ref_manifest["counts"]


def test_bad_records_are_reported_not_lost(samples, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    path = samples / "fhir_bulk_ndjson_10_patients" / "Patient.000.ndjson.gz"
    good = gzip.decompress(path.read_bytes()).splitlines()
    (src / "Patient.000.ndjson").write_bytes(b"\n".join([*good[:3], b"{not json", b'{"resourceType": "Patient"}']))
    manifest = run(src, tmp_path / "out", partitions=2)
    rejects = [orjson.loads(x) for x in (tmp_path / "out" / "rejects.ndjson").read_bytes().splitlines()]
    assert {r["row"] for r in rejects} == {4, 5}
    assert all(r["source"].endswith("Patient.000.ndjson") for r in rejects)
    assert manifest["counts"]["patients"]["read"] == 4 and manifest["counts"]["patients"]["rejected"] == 1
    assert manifest["counts"]["resources"]["rejected"] == 2


def test_patient_routing_is_stable():
    obs = {"resourceType": "Observation", "subject": {"reference": "Patient/abc"}}
    imm = {"resourceType": "Immunization", "patient": {"reference": "Patient/abc/_history/2"}}
    assert patient_key(obs) == patient_key(imm) == patient_key({"resourceType": "Patient", "id": "abc"}) == "abc"
    assert patient_key({"resourceType": "Organization", "id": "o"}) is None
    assert partition_of("abc", 7) == 891568578 % 7  # CRC-32 of "abc": the same in every process and on every machine


def test_resources_of_no_patient_are_spread_over_partitions():
    """Organisations and unreadable lines must not pile up in one partition as the export grows."""
    orgs = [Entry({"resourceType": "Organization", "id": f"o{i}"}, "Organization.ndjson", i) for i in range(200)]
    bad = [Entry(None, "Observation.ndjson", i, "malformed JSON") for i in range(200)]
    assert routing_key(Entry({"resourceType": "Observation", "subject": {"reference": "Patient/abc"}}, "x", 1)) == "abc"
    for entries in (orgs, bad):
        used = {partition_of(routing_key(e), 8) for e in entries}
        assert used == set(range(8))


def test_write_back_retries_then_reports_client_errors(reference, fhir_server, tmp_path, source):
    out, _ = reference
    fhir_server.fail_next(429, retry_after="0")
    fhir_server.fail_next(503)
    manifest = run(source, out, post=fhir_server.url, chunk_size=5)
    wb = manifest["write_back"]
    assert wb["resources"] == 13 and wb["bundles"] == 3 and wb["retries"] == 2
    assert len(fhir_server.resources["Observation"]) == 12 and len(fhir_server.resources["Provenance"]) == 1
    run(source, out, post=fhir_server.url)  # posting again updates in place (PUT), it does not duplicate
    assert len(fhir_server.resources["Observation"]) == 12

    fhir_server.fail_next(400)
    with pytest.raises(FhirServerError) as err:
        run(source, out, post=fhir_server.url)
    assert err.value.status == 400 and err.value.outcome["resourceType"] == "OperationOutcome"


def test_dry_run_sends_nothing(reference, fhir_server, source):
    out, _ = reference
    manifest = run(source, out, post=fhir_server.url, dry_run=True)
    assert manifest["write_back"]["dry_run"] and manifest["write_back"]["resources"] == 13
    assert not fhir_server.resources


def test_server_source_via_bulk_export(fhir_server, samples, tmp_path):
    resources = []
    for name in ("Patient", "Condition"):
        path = samples / "fhir_bulk_ndjson_10_patients" / f"{name}.000.ndjson.gz"
        resources += [orjson.loads(x) for x in gzip.decompress(path.read_bytes()).splitlines()]
    fhir_server.load(resources)
    manifest = run(fhir_server.url, tmp_path, partitions=2)
    assert manifest["counts"]["patients"]["read"] == 13
    assert manifest["counts"]["resources"]["read"] == len(resources)


def test_cli_runs_the_scorers_it_is_given_and_names_a_bad_one(source, tmp_path):
    from typer.testing import CliRunner

    from medmeta.cli import app

    result = CliRunner().invoke(app, ["batch", "--input", str(source), "--output", str(tmp_path / "out"),
                                      "--scorers", SCORERS])
    assert result.exit_code == 0, result.output
    manifest = orjson.loads((tmp_path / "out" / "manifest.json").read_bytes())
    assert [m["name"] for m in manifest["models"]] == ["test-last-hba1c"]
    result = CliRunner().invoke(app, ["batch", "--input", str(source), "--output", str(tmp_path / "bad"),
                                      "--scorers", "medmeta.scoring:no_such_factory"])
    assert isinstance(result.exception, MedmetaError)
    assert "medmeta.scoring:no_such_factory" in str(result.exception)


def test_a_model_failing_on_one_patient_costs_only_that_result(source, reference, tmp_path, monkeypatch, caplog):
    ref_out, ref_manifest = reference
    outcomes = [orjson.loads(x) for x in (ref_out / "outcomes.ndjson").read_bytes().splitlines()]
    victim = next(o["patient"] for o in outcomes if o["status"] == "scored")
    monkeypatch.setenv("MEDMETA_TEST_BREAKS_ON", victim)
    manifest = run(source, tmp_path, scorers="batch_scorers:make_with_a_failing_model")
    assert manifest["model_errors"] == {"test-breaks-on-one": {
        "patients": 1, "first": "ZeroDivisionError: a record this model cannot handle"}}
    scored = ref_manifest["counts"]["patients"]["scored"]
    assert manifest["counts"]["results"]["Observation"] == 2 * scored - 1  # every result but one
    lines = {o["patient"]: o for o in map(orjson.loads, (tmp_path / "outcomes.ndjson").read_bytes().splitlines())}
    assert lines[victim]["status"] == "scored" and lines[victim]["models"] == ["test-last-hba1c"]
    assert lines[victim]["model_errors"] == ["test-breaks-on-one: ZeroDivisionError: a record this model cannot handle"]
    assert "model test-breaks-on-one failed on a partition (ZeroDivisionError)" in caplog.text
    assert victim not in caplog.text  # the log names the model and the error type, not the patient


@pytest.mark.parametrize(("option", "message"), [
    ({"workers": 0}, "workers must be at least 1"), ({"partitions": -1}, "partitions must be at least 1"),
    ({"dry_run": True}, "give --post URL"), ({"chunk_size": 0}, "chunk_size must be at least 1")])
def test_impossible_settings_are_refused_before_anything_runs(source, tmp_path, option, message):
    with pytest.raises(MedmetaError, match=message):
        BatchConfig(source=str(source), output=tmp_path, **option)
    assert not any(tmp_path.iterdir())

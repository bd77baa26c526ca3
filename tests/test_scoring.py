"""The shipped models behind FHIR: warfarin proposals, glucose forecasts; the same answers as from CSV."""

import json
import shutil

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from medmeta.cli import app
from medmeta.datasets.cgm import load_cgm
from medmeta.datasets.warfarin import load_iwpc
from medmeta.fhir import iwpc_frame, read, write_ndjson
from medmeta.fhir.cgm import cgm_series
from medmeta.models import model_dir
from medmeta.scoring.glucose import GlucoseScorer
from medmeta.scoring.warfarin import WarfarinScorer
from medmeta.treatment.warfarin import WarfarinDoseModel

RUN = "2026-11-25T00:00:00+00:00"


@pytest.fixture(scope="module")
def iwpc_fhir(samples, tmp_path_factory):
    out = tmp_path_factory.mktemp("iwpc")
    result = CliRunner().invoke(app, ["fhir", "from-iwpc", str(samples / "iwpc_warfarin" / "warfarin.csv"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def cgm_fhir(samples, tmp_path_factory):
    out = tmp_path_factory.mktemp("cgm")
    result = CliRunner().invoke(app, ["fhir", "from-cgm", str(samples / "cgm_iglu" / "example_data_hall.csv"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_warfarin_suggest_writes_one_proposal_per_patient(samples, iwpc_fhir, tmp_path):
    result = CliRunner().invoke(app, ["warfarin", "suggest", "--input", str(iwpc_fhir), "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    proposals = [orjson.loads(x) for x in (tmp_path / "MedicationRequest.ndjson").read_bytes().splitlines()]
    assert len(proposals) == 500 and len({p["subject"]["reference"] for p in proposals}) == 500
    frame, _ = load_iwpc(samples / "iwpc_warfarin" / "warfarin.csv")
    expected = WarfarinDoseModel.load(model_dir("warfarin")).suggest(frame).set_index("subject_id")
    for p in proposals[:50]:
        pid = p["subject"]["reference"].removeprefix("Patient/")
        dose = p["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"]
        assert dose == pytest.approx(expected.loc[pid, "dose_mg_week"], abs=0.051)
        assert p["intent"] == "proposal" and p["status"] == "draft"
        assert "not an order" in p["note"][0]["text"] and "90% prediction interval" in p["note"][0]["text"]
        lo, hi = expected.loc[pid, ["interval80_low_mg_week", "interval80_high_mg_week"]]
        assert f"{lo:.1f}-{hi:.1f} mg per 1 wk" in p["dosageInstruction"][0]["text"]


def test_warfarin_skips_patients_without_indication_or_genotype(samples):
    tables = read(samples / "fhir_bulk_ndjson_10_patients")
    scores = WarfarinScorer().score(tables, run_time=RUN)
    assert len(scores.results) + len(scores.skipped) == len(tables.patients) == 13
    for pid in scores.results:  # proposals reference only genotype Observations that exist
        assert pid in set(tables.patients["patient_id"])
    assert set(scores.skipped.values()) <= {"no warfarin indication, genotype or warfarin record"}


def test_our_own_results_never_feed_back_as_inputs(iwpc_fhir, cgm_fhir, tmp_path):
    """Proposals (intent=proposal) and forecasts (status preliminary) written back do not change the inputs."""
    for name, source, scorer, view in (("iwpc", iwpc_fhir, WarfarinScorer(), iwpc_frame),
                                       ("cgm", cgm_fhir, GlucoseScorer(), cgm_series)):
        tables = read(source)
        scores = scorer.score(tables, run_time=RUN)
        merged = tmp_path / name
        write_ndjson([r for rs in scores.results.values() for r in rs], merged / "results")
        shutil.copytree(source, merged / "source")
        again = read(merged)
        assert again.counts.totals()["used"] == tables.counts.totals()["used"] + sum(map(len, scores.results.values()))
        if name == "iwpc":
            assert view(again).sort_values("subject_id").reset_index(drop=True).equals(
                view(tables).sort_values("subject_id").reset_index(drop=True))
        else:
            assert {k: len(v) for k, v in view(again).items()} == {k: len(v) for k, v in view(tables).items()}


def test_glucose_forecasts_from_the_last_reading(samples, cgm_fhir):
    tables = read(cgm_fhir)
    scores = GlucoseScorer().score(tables, run_time=RUN)
    series, _ = load_cgm(samples / "cgm_iglu" / "example_data_hall.csv")
    assert set(scores.results) == set(series)
    for sid, resources in scores.results.items():
        last = series[sid].time[-1].tz_localize("UTC")
        times = [r["effectiveDateTime"] for r in resources]
        assert times == [(last + np.timedelta64(m, "m")).isoformat() for m in (30, 60)]
        for r in resources:
            value = r["valueQuantity"]["value"]
            low, high = r["referenceRange"][0]["low"]["value"], r["referenceRange"][0]["high"]["value"]
            assert 40 <= value <= 400 and low <= value <= high
            assert r["status"] == "preliminary" and len(r["derivedFrom"]) == 12


def test_cgm_eval_reads_fhir_like_csv(samples, cgm_fhir, tmp_path):
    for name, source in (("csv", samples / "cgm_iglu" / "example_data_hall.csv"), ("fhir", cgm_fhir)):
        result = CliRunner().invoke(app, ["cgm", "eval", "--input", str(source), "--json", str(tmp_path / name),
                                          "--bootstrap", "50"])
        assert result.exit_code == 0, result.output
    csv, fhir = (json.loads((tmp_path / n).read_text()) for n in ("csv", "fhir"))
    assert csv["methods"] == fhir["methods"]

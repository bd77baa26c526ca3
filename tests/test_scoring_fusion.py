"""The fused warfarin model behind FHIR: same answers as from the CSV, genotype missing for some patients."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from medmeta.cli import app
from medmeta.datasets.warfarin import load_iwpc
from medmeta.fhir import read
from medmeta.fusion.datasets import warfarin_data
from medmeta.scoring import default_scorers
from medmeta.scoring.fusion import FusionScorer

RUN = "2026-11-25T00:00:00+00:00"
WITHOUT_GENOTYPE = 40  # patients whose genotype Observations are removed from the FHIR export


def _is_genotype(resource: dict) -> bool:
    return resource["resourceType"] == "Observation" and (resource["id"].endswith("-cyp2c9")
                                                          or "-vkorc1-" in resource["id"])


@pytest.fixture(scope="module")
def scored(samples, tmp_path_factory):
    """The embedded IWPC sample as FHIR, with the genotype Observations of the first patients removed."""
    out = tmp_path_factory.mktemp("iwpc")
    result = CliRunner().invoke(app, ["fhir", "from-iwpc", str(samples / "iwpc_warfarin" / "warfarin.csv"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame, _ = load_iwpc(samples / "iwpc_warfarin" / "warfarin.csv")
    dropped = set(frame["subject_id"].astype(str)[:WITHOUT_GENOTYPE])
    path = out / "Observation.ndjson"
    lines = path.read_text().splitlines()
    kept = [line for line in lines if not (_is_genotype(r := json.loads(line))
                                           and r["subject"]["reference"].removeprefix("Patient/") in dropped)]
    assert len(kept) < len(lines)
    path.write_text("\n".join(kept) + "\n")
    scorer, tables = FusionScorer(), read(out)
    return scorer, scorer.score(tables, run_time=RUN), frame, dropped, tables, out


def test_fused_proposals_match_the_csv_with_and_without_genotype(scored):
    scorer, scores, frame, dropped, *_ = scored
    data = warfarin_data(frame)
    ids = list(data.x.ids)
    assert set(scores.results) == set(ids) and not scores.skipped
    without = data.x.without("genotype")
    expected = {"both": scorer.fused.predict(data.x), "clinical": scorer.fused.predict(without)}
    lo80, hi80 = scorer.fused.predict_interval(without)["0.8"]
    for pid, (resource,) in scores.results.items():
        i = ids.index(pid)
        dose = resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"]
        note = resource["note"][0]["text"]
        assert resource["intent"] == "proposal" and "not an order" in note
        if pid in dropped:  # no genotype in the record: the clinical record alone, its own interval
            assert dose == pytest.approx(expected["clinical"][i], abs=1e-3), pid
            assert "used: clinical (weight 1.00)." in note and "Missing: genotype." in note
            assert "supportingInformation" not in resource
            assert f"{lo80[i]:.1f}-{hi80[i]:.1f} mg per 1 wk" in resource["dosageInstruction"][0]["text"]
        elif data.x.mask["genotype"][i]:
            assert dose == pytest.approx(expected["both"][i], abs=1e-3), pid
            assert "clinical (weight" in note and "+ genotype (weight" in note and "Missing" not in note
            assert resource["supportingInformation"]
    assert sum("Missing: genotype." in rs[0]["note"][0]["text"] for rs in scores.results.values()) >= len(dropped)


def test_proposals_are_deterministic_and_patient_specific_without_genotype(scored):
    scorer, scores, _, dropped, tables, _ = scored
    again = scorer.score(tables, run_time=RUN)
    assert again.results == scores.results
    later = scorer.score(tables, run_time="2026-11-26T00:00:00+00:00")
    assert not {rs[0]["id"] for rs in later.results.values()} & {rs[0]["id"] for rs in scores.results.values()}
    doses = [scores.results[p][0]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] for p in dropped]
    assert np.std(doses) > 1  # mg/week: still driven by the clinical record


def test_patients_without_indication_or_genotype_are_skipped(samples):
    tables = read(samples / "fhir_bulk_ndjson_10_patients")
    scores = FusionScorer().score(tables, run_time=RUN)
    assert len(scores.results) + len(scores.skipped) == len(tables.patients)
    assert set(scores.skipped.values()) <= {"no warfarin indication, genotype or warfarin record"}


def test_default_scorers_give_each_patient_one_dose_from_the_model_measured_better_for_them(scored):
    """With a readable genotype the warfarin model proposes the dose; without one, the fused model."""
    _, fused, frame, dropped, tables, _ = scored
    by_name = {s.name: s for s in default_scorers()}
    warfarin, fusion = by_name["warfarin-dose"], by_name["warfarin-fusion"]
    genotyped_scores = warfarin.score(tables, run_time=RUN)
    ungenotyped_scores = fusion.score(tables, run_time=RUN)
    info = warfarin_data(frame).info
    none = set(info.loc[info["genotype"] == "none", "subject_id"]) | dropped  # never genotyped, or removed
    assert set(ungenotyped_scores.results) == none and len(none) > len(dropped)
    assert set(genotyped_scores.results) == set(frame["subject_id"].astype(str)) - none
    assert {p: r[0]["id"] for p, r in ungenotyped_scores.results.items()} == \
        {p: fused.results[p][0]["id"] for p in none}  # the fused model's own proposals
    assert set(genotyped_scores.skipped) == none and set(ungenotyped_scores.skipped) == set(genotyped_scores.results)
    assert all("fused model" in why for why in genotyped_scores.skipped.values())


@pytest.mark.slow
def test_batch_job_runs_the_fused_model_instead_of_the_warfarin_model(scored, tmp_path):
    """The batch engine with ``medmeta.scoring.fusion:scorers``: the scorer's own proposals, nothing lost."""
    from medmeta.batch import BatchConfig, run_batch

    _, scores, _, _, tables, source = scored
    manifest = run_batch(BatchConfig(source=str(source), output=tmp_path, scorers="medmeta.scoring.fusion:scorers",
                                     partitions=3, run_time=RUN), show_progress=False)
    assert manifest["counts"]["patients"]["read"] == len(tables.patients) and not manifest["model_errors"]
    written = [json.loads(x) for x in (tmp_path / "MedicationRequest.ndjson").read_text().splitlines()]
    assert {r["id"]: r for r in written} == {rs[0]["id"]: rs[0] for rs in scores.results.values()}

"""Few-shot image diagnosis behind FHIR: one RiskAssessment per Media image, with evidence; batch runs it."""

import base64

import numpy as np
import orjson
import pytest

from medmeta.batch import BatchConfig, run_batch
from medmeta.bundle import load_bundle
from medmeta.datasets.medmnist import load_medmnist
from medmeta.errors import DataError
from medmeta.fhir import read, write_ndjson
from medmeta.fhir.media import media_resource
from medmeta.memory import SupportMemory
from medmeta.scoring import default_scorers
from medmeta.scoring.diagnosis import DiagnosisScorer, shipped_bundle

RUN = "2026-11-25T00:00:00+00:00"
CREATED = "2024-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def export(samples, tmp_path_factory):
    """p1: a platelet and a liver image (test split, not in any memory); p2: no image; p3: a broken image."""
    blood = load_medmnist(samples / "medmnist" / "bloodmnist.npz", "test")
    organ = load_medmnist(samples / "medmnist" / "organamnist.npz", "test")
    platelet = blood.images[blood.labels == blood.class_names.index("platelet")][0]
    liver = organ.images[organ.labels == organ.class_names.index("liver")][0]
    broken = media_resource("p3", platelet, rid="m3", created=CREATED)
    broken["content"]["data"] = base64.b64encode(b"not an image").decode()
    out = tmp_path_factory.mktemp("export")
    write_ndjson([*({"resourceType": "Patient", "id": p} for p in ("p1", "p2", "p3")),
                  media_resource("p1", platelet, rid="m1", created=CREATED, title="blood smear"),
                  media_resource("p1", liver, rid="m2", created="2024-01-02T00:00:00Z", title="abdominal CT"),
                  broken], out)
    return out


@pytest.fixture(scope="module")
def scorer():
    return DiagnosisScorer(top_k=3)


def test_one_risk_assessment_per_image_with_evidence(export, scorer):
    scores = scorer.score(read(export), run_time=RUN)
    assert set(scores.results) == {"p1"}
    assert scores.skipped["p2"] == "no images (FHIR Media)"
    assert "Media/m3" in scores.skipped["p3"] and "not a readable image" in scores.skipped["p3"]
    platelet, liver = scores.results["p1"]
    for r, media, expected in ((platelet, "m1", "bloodmnist:platelet"), (liver, "m2", "organamnist:liver")):
        assert r["resourceType"] == "RiskAssessment" and r["status"] == "preliminary"
        assert r["basis"] == [{"reference": f"Media/{media}"}] and r["subject"] == {"reference": "Patient/p1"}
        probabilities = {p["outcome"]["coding"][0]["code"]: p["probabilityDecimal"] for p in r["prediction"]}
        assert len(probabilities) == 14 and sum(probabilities.values()) == pytest.approx(1, abs=1e-3)
        assert max(probabilities, key=probabilities.get) == expected
        note = r["note"][0]["text"]
        assert "not an order" in note and f"most likely {expected}" in note
        assert note.count("cosine similarity") == 3 and ".npz:train:" in note  # the evidence cases, traced
    again = scorer.score(read(export), run_time=RUN)
    assert again.results == scores.results  # deterministic ids and contents: re-runs write the same records


def test_a_clinician_memory_is_used_and_a_new_class_counts_at_once(export, samples, tmp_path):
    blood = load_medmnist(samples / "medmnist" / "bloodmnist.npz", "train")
    memory = SupportMemory(tmp_path / "memory", load_bundle(shipped_bundle()))
    for name in ("eosinophil", "neutrophil"):
        memory.add(blood.images[blood.labels == blood.class_names.index(name)][:5], name)
    tables = read(export)
    [first, _] = DiagnosisScorer(memory=tmp_path / "memory").score(tables, run_time=RUN).results["p1"]
    assert {p["outcome"]["coding"][0]["code"] for p in first["prediction"]} == {"eosinophil", "neutrophil"}
    memory.add(blood.images[blood.labels == blood.class_names.index("platelet")][:5], "platelet")
    [first, _] = DiagnosisScorer(memory=tmp_path / "memory").score(tables, run_time=RUN).results["p1"]
    assert "most likely platelet" in first["note"][0]["text"]
    with pytest.raises(DataError, match="not a support memory"):
        DiagnosisScorer(memory=tmp_path / "nowhere")


def test_batch_scores_images_and_never_reads_its_results_back(export, tmp_path):
    assert any(isinstance(s, DiagnosisScorer) for s in default_scorers())
    out = tmp_path / "out"
    run_batch(BatchConfig(source=str(export), output=out, partitions=1, run_time=RUN), show_progress=False)
    results = [orjson.loads(x) for x in (out / "RiskAssessment.ndjson").read_bytes().splitlines()]
    assert sorted(r["basis"][0]["reference"] for r in results) == ["Media/m1", "Media/m2"]
    # the inputs plus the job's own outputs, read as one source: the same images, no new inputs
    both = tmp_path / "both"
    for folder in (export, out):
        (both / folder.name).mkdir(parents=True)
        for p in folder.glob("*.ndjson"):
            (both / folder.name / p.name).write_bytes(p.read_bytes())
    tables, before = read(both), read(export)
    assert len(tables.images) == len(before.images) == 3
    assert len(tables.observations) == len(before.observations)
    assert np.array_equal(sorted(tables.images["media_id"]), sorted(before.images["media_id"]))

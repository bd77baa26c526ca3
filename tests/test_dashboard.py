"""The dashboard, page by page, driven with Streamlit's AppTest (no browser; see test_dashboard_browser.py)."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from streamlit.testing.v1 import AppTest

from medmeta.dashboard.audit import AuditLog
from medmeta.datasets.medmnist import load_medmnist
from medmeta.fhir import write_ndjson
from medmeta.fhir.media import DICOM, media_resource

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
USER = "Dr Test"
VARS = ("MEDMETA_HOME", "MEDMETA_AUDIT_DB", "MEDMETA_DASHBOARD_SOURCE", "MEDMETA_BUNDLES", "MEDMETA_USER")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """One MEDMETA_HOME for the module: the sample export and the support memories are built once."""
    return tmp_path_factory.mktemp("medmeta-home")


@pytest.fixture
def env(home, tmp_path, monkeypatch) -> Path:
    """The dashboard's environment: shared home, a fresh audit log per test. Returns the audit log path."""
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDMETA_HOME", str(home))
    monkeypatch.setenv("MEDMETA_AUDIT_DB", str(tmp_path / "audit.sqlite"))
    return tmp_path / "audit.sqlite"


def start(page: str = "Patients", user: str = USER) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300).run()
    assert not at.exception, [e.value for e in at.exception]
    at.sidebar.text_input(key="user").set_value(user)
    at.sidebar.radio(key="page").set_value(page)
    return rerun(at)


def rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def button(at: AppTest, label: str):
    [b] = [b for b in at.button if b.label == label]
    return b


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "success", "warning", "error")
                     for e in getattr(at, kind)) + "\n" + "\n".join(captions(at))


def test_every_page_carries_the_banner_and_the_patients_page_searches_and_opens(env):
    at = start("Patients")
    assert "Not for clinical use" in at.error[0].value
    table = at.dataframe[0].value
    assert len(table) > 500 and {"images", "labs", "cgm", "genotype"} <= set(table.columns)
    with_genotype = table[table["genotype"]]["patient"].tolist()
    at.multiselect(key="patient-modalities").set_value(["genotype"])
    rerun(at)
    assert set(at.dataframe[0].value["patient"]) == set(with_genotype)
    target = with_genotype[3]
    at.text_input(key="patient-search").set_value(target[-6:].upper())  # case-insensitive search
    rerun(at)
    assert target in at.dataframe[0].value["patient"].tolist() and len(at.dataframe[0].value) < len(with_genotype)
    at.selectbox(key="patient-open").set_value(target)
    rerun(at)
    assert at.sidebar.selectbox(key="patient").value == target
    for page in ("Diagnosis", "Treatment", "Models", "Audit log"):
        at.sidebar.radio(key="page").set_value(page)
        rerun(at)
        assert "Not for clinical use" in at.error[0].value, page


def test_treatment_accept_and_override_go_to_the_audit_log(env):
    at = start("Patients")
    table = at.dataframe[0].value
    patient = table[table["genotype"]]["patient"].iloc[0]
    at.sidebar.selectbox(key="patient").set_value(patient)
    at.sidebar.radio(key="page").set_value("Treatment")
    rerun(at)
    assert any("mg/week" in m.value for m in at.metric)
    assert "Fusion model, second opinion:" in texts(at) and "used: clinical" in texts(at)
    button(at, "Accept").click()
    rerun(at)
    assert "Accepted; recorded in the audit log." in texts(at)
    # an override without a reason is refused, and nothing is recorded
    [decision] = [t for t in at.text_input if t.label == "Your decision"]
    decision.set_value("30 mg/week")
    button(at, "Override").click()
    rerun(at)
    assert "An override needs a reason." in texts(at)
    assert "overridden" not in set(AuditLog(env).events()["action"])
    [reason] = [t for t in at.text_input if t.label == "Reason for overriding"]
    reason.set_value("recent INR above range")
    button(at, "Override").click()
    rerun(at)
    events = AuditLog(env).events(patient)
    warfarin = events[events["kind"] == "warfarin"]
    assert list(warfarin["action"]) == ["shown", "accepted", "overridden"]
    assert set(warfarin["user"]) == {USER} and warfarin["time"].str.match(r"\d{4}-\d\d-\d\dT").all()
    assert warfarin["model_version"].str.contains("sha256:").all()
    suggestion = json.loads(warfarin["suggestion"].iloc[-1])
    assert suggestion["clinician_decision"] == "30 mg/week" and suggestion["dose_mg_week"] > 0
    assert warfarin["reason"].iloc[-1] == "recent INR above range"
    at.sidebar.radio(key="page").set_value("Audit log")
    rerun(at)
    shown = at.dataframe[0].value
    assert len(shown) == len(events) and set(shown["action"]) >= {"accepted", "overridden"}


def test_without_a_name_nothing_can_be_accepted(env):
    at = start("Patients", user="")
    table = at.dataframe[0].value
    at.sidebar.selectbox(key="patient").set_value(table[table["genotype"]]["patient"].iloc[0])
    at.sidebar.radio(key="page").set_value("Treatment")
    rerun(at)
    decisions = [b for b in at.button if b.label in ("Accept", "Override")]
    assert len(decisions) >= 2 and all(b.disabled for b in decisions)  # a suggestion is shown, but not acceptable


def test_glucose_forecast_with_its_band_alerts_and_adaptation_curve(env):
    at = start("Patients")
    table = at.dataframe[0].value
    patient = table[table["cgm"] > 0]["patient"].iloc[0]
    at.sidebar.selectbox(key="patient").set_value(patient)
    at.sidebar.radio(key="page").set_value("Treatment")
    rerun(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["In 30 minutes"].endswith("mg/dL") and metrics["In 60 minutes"].endswith("mg/dL")
    assert 0 < float(metrics["In 30 minutes"].split()[0]) < 600
    assert metrics["Adapted on"].endswith("points of the last 24 h")
    trace, curve = (json.loads(c.proto.spec) for c in at.get("vega_lite_chart"))
    assert "personalised forecast" in str(trace["title"])
    marks = [layer["mark"]["type"] for layer in trace["layer"]]
    assert marks[:3] == ["line", "area", "line"] and "rule" in marks  # trace, band, forecast, 70/180 lines
    assert "How the error fell as the model adapted" in str(curve["title"])
    assert "confirm with a fingerstick" in texts(at)
    button(at, "Accept").click()
    rerun(at)
    glucose = AuditLog(env).events(patient).query("kind == 'glucose'")
    assert list(glucose["action"]) == ["shown", "accepted"]
    assert set(json.loads(glucose["suggestion"].iloc[-1])) >= {"glucose_30min", "band_30min", "alert"}


def test_diagnosis_with_evidence_then_a_new_class_is_used_by_the_next_prediction(env, home):
    at = start("Diagnosis")
    at.radio(key="dx-bundle").set_value(next(o for o in at.radio(key="dx-bundle").options if "protonet" in o))
    rerun(at)
    sample = next(o for o in at.selectbox(key="dx-sample").options if "platelet" in o)
    at.selectbox(key="dx-sample").set_value(sample)
    button(at, "Diagnose").click()
    rerun(at)
    [suggested] = [m for m in at.metric if m.label == "Suggested class"]
    assert suggested.value.startswith(("bloodmnist:", "organamnist:"))
    evidence = [c.value for c in at.caption if c.value.startswith("case c")]
    assert len(evidence) == 5  # the five most similar stored cases, shown as images with these captions
    assert len(captions(at)) == 6 and sum("· similarity" in c for c in captions(at)) == 5  # query + 5 cases
    button(at, "Accept").click()
    rerun(at)
    rows = AuditLog(env).events()
    dx = rows[rows["kind"] == "diagnosis"]
    assert list(dx["action"]) == ["shown", "accepted"] and dx["model_version"].str.contains("memory v").all()
    assert json.loads(dx["suggestion"].iloc[0])["predicted"] == suggested.value

    # teach a new class from k = 3 images: the query image and two shifted copies
    query = np.asarray(Image.open(Path(APP).parents[1] / "monai_bundles" / "fewshot_protonet_classification"
                                  / "sample_images" / f"{sample}.png"))
    k_images = [query, np.roll(query, 1, axis=0), np.roll(query, 1, axis=1)]
    at.selectbox(key="teach-class").set_value("New class…")
    at.text_input(key="teach-new").set_value("test:new-cell-type")
    at.file_uploader(key="teach-files").set_value([(f"k{i}.png", png(im), "image/png")
                                                   for i, im in enumerate(k_images)])
    rerun(at)
    button(at, "Add to the support memory").click()
    rerun(at)
    assert "Added 3 case(s) of 'test:new-cell-type'" in texts(at)
    assert "Press Diagnose" in texts(at)  # the earlier prediction is not shown as if it used the new class
    button(at, "Diagnose").click()
    rerun(at)
    [suggested] = [m for m in at.metric if m.label == "Suggested class"]
    assert suggested.value == "test:new-cell-type"
    assert "test:new-cell-type · similarity 1.00" in captions(at)
    memory = home / "support-memory" / "fewshot_protonet_classification"
    assert memory.is_dir() and not (Path(APP).parents[1] / "monai_bundles" / "support-memory").exists()


def captions(at: AppTest) -> list[str]:
    """The captions of the images on the page."""
    return [c for image in at.image for c in image.captions]


def test_uploads_npz_slices_and_dicom(env, samples):
    at = start("Diagnosis")
    at.radio(key="dx-source").set_value("Upload")
    rerun(at)
    stack = load_medmnist(samples / "medmnist" / "organamnist.npz", "test").images[:4]
    buffer = io.BytesIO()
    np.savez(buffer, test_images=stack)
    at.file_uploader(key="dx-upload").set_value(("slices.npz", buffer.getvalue(), "application/octet-stream"))
    rerun(at)
    at.number_input(key="dx-slice").set_value(2)
    button(at, "Diagnose").click()
    rerun(at)
    assert [m for m in at.metric if m.label == "Suggested class"]
    assert "upload sha256:" in texts(at) and "slices.npz" not in texts(at)  # file names may name patients
    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    at.file_uploader(key="dx-upload").set_value(("ct.dcm", dicom, "application/dicom"))
    rerun(at)
    assert "128×128" in texts(at)
    at.file_uploader(key="dx-upload").set_value(("broken.npz", b"not a zip", "application/octet-stream"))
    rerun(at)
    assert "This file cannot be read" in texts(at)


def test_a_patients_media_image_from_a_fhir_source(env, samples, tmp_path, monkeypatch):
    image = load_medmnist(samples / "medmnist" / "bloodmnist.npz", "test").images[0]
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    write_ndjson([{"resourceType": "Patient", "id": "p-img", "gender": "female", "birthDate": "1960-05-01"},
                  media_resource("p-img", image, rid="m1", created="2024-01-01T00:00:00Z", title="smear"),
                  {"resourceType": "Media", "id": "m2", "status": "completed",
                   "subject": {"reference": "Patient/p-img"},
                   "content": {"contentType": DICOM, "url": str(tmp_path / "ct.dcm")}}], tmp_path / "fhir")
    monkeypatch.setenv("MEDMETA_DASHBOARD_SOURCE", str(tmp_path / "fhir"))
    at = start("Patients")
    assert at.dataframe[0].value.set_index("patient").loc["p-img", "images"] == 2
    at.sidebar.radio(key="page").set_value("Diagnosis")
    rerun(at)
    at.radio(key="dx-source").set_value("This patient's images")
    rerun(at)
    assert len(at.selectbox(key="dx-media").options) == 2
    button(at, "Diagnose").click()
    rerun(at)
    assert [m for m in at.metric if m.label == "Suggested class"] and "Media/m1" in texts(at)
    at.selectbox(key="dx-media").set_value(1)
    rerun(at)
    assert "Media/m2 · 128×128" in texts(at)


def test_models_page_shows_bundle_cards_with_measured_or_missing_results(env, tmp_path, monkeypatch):
    repo = Path(APP).parents[1]
    (tmp_path / "monai_bundles").mkdir()
    for name in ("fewshot_protonet_classification", "fewshot_matching_classification"):
        (tmp_path / "monai_bundles" / name).symlink_to(repo / "monai_bundles" / name)
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    rows = [{"benchmark": "pneumonia", "method": "medmeta Prototypical (bundle)", "ways": 2, "shots": k,
             "queries": 15, "accuracy": acc, "ci95": 0.012, "episodes": 600} for k, acc in ((1, 0.61), (5, 0.733))]
    (results / "fewshot_protocol.json").write_text(json.dumps({"command": "python benchmarks/fewshot_protocol.py",
                                                               "machine": "test", "results": rows}))
    monkeypatch.setenv("MEDMETA_BUNDLES", str(tmp_path / "monai_bundles"))
    at = start("Models")
    frames = [d.value for d in at.dataframe]
    [table] = [f for f in frames if "95% CI (±)" in f.columns]
    assert table["accuracy (%)"].tolist() == [61.0, 73.3] and table["95% CI (±)"].tolist() == [1.2, 1.2]
    assert "not yet measured" in texts(at)  # the matching bundle has no row in that file
    assert any("predicted_mg_week" in f.columns for f in frames)  # warfarin calibration table
    assert "Calibration: not yet measured" in texts(at)

    shipped = repo / "benchmarks" / "results" / "calibration" / "fewshot_protonet_classification_pneumoniamnist.json"
    (results / "calibration").mkdir()
    shutil.copy(shipped, results / "calibration" / shipped.name)
    rerun(at)
    [chart] = [c for c in at.get("vega_lite_chart") if "Calibration on data sets it never saw" in c.proto.spec]
    points = next(layer for layer in json.loads(chart.proto.spec)["layer"] if layer["mark"]["type"] == "line"
                  and layer["encoding"]["y"]["field"] == "accuracy")
    assert points["encoding"]["x"]["field"] == "confidence"
    ece = json.loads(shipped.read_text())["calibration"]["ece"]
    assert f"ECE {ece:.3f}".encode() in b"".join(d.data.data for d in chart.proto.datasets)


def test_no_patient_identifiers_in_the_application_log(env, caplog):
    caplog.set_level(logging.DEBUG)
    at = start("Patients")
    table: pd.DataFrame = at.dataframe[0].value
    ids = table["patient"].tolist()
    for patient in table[table["genotype"] | (table["cgm"] > 0)]["patient"].head(3):
        at.sidebar.selectbox(key="patient").set_value(patient)
        at.sidebar.radio(key="page").set_value("Treatment")
        rerun(at)
        button(at, "Accept").click()
        rerun(at)
    at.sidebar.radio(key="page").set_value("Diagnosis")
    rerun(at)
    button(at, "Diagnose").click()
    rerun(at)
    messages = [r.getMessage() for r in caplog.records]
    assert any("suggestion accepted" in m for m in messages)  # the log was captured
    leaked = [m for m in messages for pid in ids if pid in m]
    assert not leaked, leaked[:3]

"""Real paired data for fusion (IWPC warfarin, FHIR diabetes records) and the ``medmeta fusion`` commands."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medmeta.cli import app
from medmeta.datasets.warfarin import load_iwpc
from medmeta.fhir import read
from medmeta.fusion import recipes
from medmeta.fusion.datasets import GENOTYPE_CALLS, diabetes_data, warfarin_data
from medmeta.fusion.model import FusionModel
from medmeta.treatment.iwpc import iwpc_pharmacogenetic_dose
from medmeta.treatment.warfarin_features import warfarin_features

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def iwpc(samples):
    frame, _ = load_iwpc(samples / "iwpc_warfarin" / "warfarin.csv")
    return frame


@pytest.fixture(scope="module")
def synthea(samples):
    return read(samples / "synthea_fhir_r4" / "bundles")


def test_warfarin_modalities_split_the_real_record(iwpc):
    data = warfarin_data(iwpc)
    clinical, genotype = data.modalities
    assert genotype.features == tuple(GENOTYPE_CALLS)
    assert len(data) == len(iwpc) and data.x.ids.tolist() == iwpc["subject_id"].astype(str).tolist()
    features = warfarin_features(iwpc)
    for j, name in enumerate(clinical.features):  # the warfarin model's clinical features, unchanged
        expected = features.values[:, features.names.index(name)].astype(np.float32)
        assert np.array_equal(data.x.data["clinical"][:, j], expected, equal_nan=True)
    assert not any(n.startswith(("vkorc1", "cyp2c9")) for n in clinical.features)
    marker_known = iwpc[list(GENOTYPE_CALLS)].notna().any(axis=1).to_numpy()
    assert np.array_equal(data.x.mask["genotype"], marker_known)
    cyp = data.x.data["genotype"][:, 0]
    assert np.array_equal(cyp > 0, iwpc["cyp2c9"].notna().to_numpy())
    assert (data.info["genotype"] == "complete").sum() > 0 and set(data.info["genotype"]) <= {"complete", "partial",
                                                                                                 "none"}
    dose = pd.to_numeric(iwpc["dose_mg_week"], errors="coerce").to_numpy(dtype=float)
    assert np.array_equal(np.isfinite(data.y), dose > 0)
    assert np.allclose(data.info["iwpc_pharmacogenetic"], iwpc_pharmacogenetic_dose(iwpc))


def test_uninterpretable_genotypes_are_reported_not_guessed(iwpc):
    frame = iwpc.head(3).copy()
    frame["cyp2c9"] = frame["cyp2c9"].astype(object)
    frame.loc[frame.index[0], "cyp2c9"] = "*1/*8"  # a real allele without its own IWPC coefficient
    frame.loc[frame.index[1], "cyp2c9"] = "unknown allele"
    data = warfarin_data(frame)
    assert data.x.data["genotype"][0, 0] == GENOTYPE_CALLS["cyp2c9"].index("other") + 1
    assert data.x.data["genotype"][1, 0] == 0
    assert [(r.record_id, r.field) for r in data.rejected] == [(str(frame["subject_id"].iloc[1]), "cyp2c9")]


def test_diabetes_examples_use_only_what_was_recorded_before(synthea):
    data = diabetes_data(synthea)
    assert len(data) > 50 and set(data.x.names) == {"demographics", "labs", "medications"}
    years_before = data.x.data["labs"][data.x.mask["labs"]][:, 1::2]
    assert (years_before[np.isfinite(years_before)] > 0).all()
    first = data.info["previous_count"].to_numpy() == 0
    assert np.isnan(data.info["previous_hba1c"][first]).all()
    first_with_labs = first & data.x.mask["labs"]  # a glucose before the first HbA1c, say
    assert not np.isfinite(data.x.data["labs"][first_with_labs, 0]).any()  # no earlier HbA1c in the first example
    # cut each patient's record at one of its measurements: that example must not change
    row = int(np.flatnonzero(data.info["previous_count"].to_numpy() >= 2)[0])
    pid, when = data.info["patient_id"][row], data.info["time"][row]
    obs, meds = synthea.observations, synthea.medications
    later_obs = (obs["patient_id"] == pid) & (obs["time"] >= when - pd.Timedelta(seconds=1)) & ~(
        (obs["code"] == "4548-4") & ((obs["time"] - when).abs() < pd.Timedelta(seconds=1)))
    later_meds = (meds["patient_id"] == pid) & (meds["time"] >= when - pd.Timedelta(seconds=1))
    cut = dataclasses.replace(synthea, observations=obs[~later_obs], medications=meds[~later_meds])
    again = diabetes_data(cut)
    match = np.flatnonzero((again.info["patient_id"] == pid).to_numpy()
                           & ((again.info["time"] - when).abs() < pd.Timedelta(seconds=1)).to_numpy())
    assert len(match) == 1
    for name in data.x.names:
        assert np.array_equal(again.x.data[name][match[0]], data.x.data[name][row], equal_nan=True), name
    assert again.y[match[0]] == data.y[row]


def test_cli_train_is_deterministic_and_eval_predict_work(tmp_path, samples):
    csv = str(samples / "iwpc_warfarin" / "warfarin.csv")
    runner = CliRunner()
    for out in ("a", "b"):
        result = runner.invoke(app, ["fusion", "train", "--task", "warfarin", "--input", csv,
                                     "--output", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert (tmp_path / "a" / "config.json").read_text() == (tmp_path / "b" / "config.json").read_text()
    card = (tmp_path / "a" / "README.md").read_text()
    assert "not an order" in card and "clinical + genotype" in card
    result = runner.invoke(app, ["fusion", "eval", "--task", "warfarin", "--input", csv, "--model", str(tmp_path / "a"),
                                 "--json", str(tmp_path / "eval.json"), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["methods"]["all"]) == {"fused", "iwpc_clinical", "iwpc_pharmacogenetic"}
    assert "had clinical" in report["methods"] and "genotype" in report["modality_withheld"]
    assert report["examples_scored"] + report["examples_without_target"] == 500
    result = runner.invoke(app, ["fusion", "predict", "--task", "warfarin", "--input", csv, "--model",
                                 str(tmp_path / "a"), "--output", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    predictions = json.loads((tmp_path / "p.json").read_text())["predictions"]
    assert len(predictions) == 500 and predictions[0]["unit"] == "mg/week"
    assert {tuple(p["modalities_used"]) for p in predictions} >= {("clinical", "genotype")}


def test_diabetes_model_from_fhir_and_no_shipped_synthetic_model(tmp_path, samples, synthea):
    data = diabetes_data(synthea)
    model = recipes.train("diabetes", data, epochs=5, members=2)
    assert isinstance(model, FusionModel) and model.baseline == "labs.hba1c"
    result = recipes.baselines("diabetes", data, model)["last_value"]
    assert np.isfinite(result).all()
    source = str(samples / "synthea_fhir_r4" / "bundles")
    out = CliRunner().invoke(app, ["fusion", "eval", "--task", "diabetes", "--input", source,
                                   "--json", str(tmp_path / "x.json")])
    assert out.exit_code != 0 and "no shipped diabetes fusion model" in str(out.exception or out.output)


@pytest.fixture(scope="module")
def shipped():
    from medmeta.models import model_dir

    return FusionModel.load(model_dir("warfarin_fusion"))


def test_shipped_model_predicts_from_any_subset(shipped, iwpc):
    from medmeta.fusion import predict_patient

    data = warfarin_data(iwpc.head(60))
    dosed = np.flatnonzero(np.isfinite(data.y) & data.x.present().all(1))
    both, clinical = data.x[dosed], data.x[dosed].without("genotype")
    pred = shipped.predict(both)
    assert ((pred > 3) & (pred < 150)).all()
    width = {name: np.median(np.subtract(*shipped.predict_interval(x)["0.8"][::-1]))
             for name, x in (("both", both), ("clinical", clinical))}
    assert width["clinical"] > width["both"] > 0  # without the genotype, the interval is wider
    p = predict_patient(shipped, {"genotype": {"cyp2c9": "*3/*3", "vkorc1_1639": "A/A"}}, patient_id="g")
    q = predict_patient(shipped, {"genotype": {"cyp2c9": "*1/*1", "vkorc1_1639": "G/G"}}, patient_id="h")
    assert p.modalities_used == ["genotype"] and p.unit == "mg/week" and p.prediction < q.prediction
    r = predict_patient(shipped, {"clinical": {"age_decade": 7, "weight_kg": 60, "amiodarone": 1}})
    assert r.modalities_missing == ["genotype"] and "80%" in r.intervals


def test_shipped_model_same_predictions_from_fhir_records(shipped, samples, iwpc, tmp_path):
    """IWPC CSV -> FHIR resources -> the adapters' frame: the same modalities and the same predictions."""
    from medmeta.fhir import iwpc_frame

    result = CliRunner().invoke(app, ["fhir", "from-iwpc", str(samples / "iwpc_warfarin" / "warfarin.csv"),
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    from_fhir = warfarin_data(iwpc_frame(read(tmp_path)).head(60).reset_index(drop=True))
    from_csv = warfarin_data(iwpc.head(60))
    for name in from_csv.x.names:
        assert np.array_equal(from_fhir.x.mask[name], from_csv.x.mask[name])
        assert np.array_equal(from_fhir.x.data[name], from_csv.x.data[name], equal_nan=True), name
    assert np.array_equal(shipped.predict(from_fhir.x), shipped.predict(from_csv.x))


@pytest.mark.slow
def test_fusion_beats_each_modality_alone_on_the_full_iwpc_file(full_data):
    """3-fold patient-level CV (2 members): fused better than clinical-only and genotype-only overall, and not worse
    than clinical-only on patients whose genotype is incomplete."""
    from medmeta.fusion.evaluation import cross_validate

    frame, _ = load_iwpc(full_data / "iwpc_warfarin" / "warfarin.csv")
    data = warfarin_data(frame)
    settings = {**recipes.SETTINGS["warfarin"], "members": 2}
    candidates = {"clinical": {**settings, "modalities": ["clinical"]},
                  "genotype": {**settings, "modalities": ["genotype"]},
                  "fused": {**settings, "modalities": ["clinical", "genotype"]}}
    cv = cross_validate(data, candidates, folds=3, seed=5)
    y, status = data.y[cv["index"]], data.info["genotype"].to_numpy()[cv["index"]]
    mae = {k: {g: np.mean(np.abs(p - y)[m]) for g, m in (("all", status != ""), ("incomplete", status != "complete"))}
           for k, p in cv["predictions"].items()}
    assert mae["fused"]["all"] < min(mae["clinical"]["all"], mae["genotype"]["all"]) - 0.5
    assert mae["fused"]["incomplete"] <= mae["clinical"]["incomplete"] + 0.1

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

"""Federated meta-learning: exactness of the federated statistics, clients, and Flower simulation runs."""

from __future__ import annotations

import functools
import json
import operator

import numpy as np
import pandas as pd
import pytest
import torch

from medmeta.datasets.warfarin import load_iwpc
from medmeta.errors import DataError
from medmeta.federated.clients import client_data, partitions
from medmeta.federated.glucose import FederatedGlucose, ar_from_sums, ar_sums
from medmeta.federated.settings import FederatedSettings
from medmeta.federated.task import Sums
from medmeta.federated.warfarin import EDGES, FederatedWarfarin, histogram_conformal
from medmeta.models import model_dir
from medmeta.paths import CGM_HALL_CSV, WARFARIN_CSV
from medmeta.stats import conformal_bounds
from medmeta.treatment.glucose import ARForecaster, GlucoseForecaster
from medmeta.treatment.warfarin import WarfarinDoseModel


@pytest.fixture(scope="module")
def warfarin_csv(samples):
    return samples / WARFARIN_CSV


@pytest.fixture(scope="module")
def cgm_csv(samples):
    return samples / CGM_HALL_CSV


def _settings(task, data, **kw):
    return FederatedSettings(task=task, data=str(data), output="unused", **kw)


def test_settings_round_trip_and_errors():
    s = _settings("warfarin", "x.csv", rounds=3, partition_by="indication", dp_clip=1.0, dp_noise=0.5)
    assert FederatedSettings.from_run_config(s.to_run_config()) == s
    assert _settings("cgm", "x.csv").partition_by == "subject"
    with pytest.raises(ValueError, match="unknown run-config keys"):
        FederatedSettings.from_run_config({**s.to_run_config(), "round": 3})
    with pytest.raises(ValueError, match="race or indication"):
        _settings("warfarin", "x.csv", partition_by="subject")
    with pytest.raises(ValueError, match="dp_noise needs dp_clip"):
        _settings("cgm", "x.csv", dp_noise=1.0)


def test_clients_are_disjoint_partitions_that_lose_no_patient(warfarin_csv, cgm_csv):
    from medmeta.datasets.warfarin import load_iwpc

    frame, _ = load_iwpc(warfarin_csv)
    dosed = int((pd.to_numeric(frame["dose_mg_week"], errors="coerce") > 0).sum())
    for by in ("race", "indication"):
        parts = partitions("warfarin", warfarin_csv, by)
        sizes = [len(d) for _, d in parts]
        assert sizes == sorted(sizes, reverse=True)  # largest group first
        ids = pd.concat([d["subject_id"] for _, d in parts])
        assert len(ids) == dosed and ids.is_unique
    subjects = [name for name, _ in partitions("cgm", cgm_csv, "subject")]
    assert subjects == sorted(subjects) and len(subjects) == 6
    assert [s.subject_id for s in client_data("cgm", cgm_csv, "subject", 2)] == [subjects[2]]
    assert len(client_data("cgm", cgm_csv, "subject")) == 6  # a node without a partition holds the whole file
    with pytest.raises(DataError, match="client 6 does not exist"):
        client_data("cgm", cgm_csv, "subject", 6)


def test_federated_warfarin_statistics_equal_the_pooled_ones(warfarin_csv):
    """Feature and dose scaling from summed client statistics = what fit() computes on the pooled patients,
    and so is the reference patient from summed pattern counts."""
    task = FederatedWarfarin(_settings("warfarin", warfarin_csv))
    parts = [d for _, d in partitions("warfarin", warfarin_csv, "race")]
    setup, state = task.setup(functools.reduce(operator.add, (task.statistics(d) for d in parts)))
    pooled = WarfarinDoseModel(members=2, meta_steps=1).fit(pd.concat(parts, ignore_index=True))
    np.testing.assert_allclose(setup["mean"], pooled.mean_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(setup["scale"], pooled.scale_, rtol=1e-9)
    assert setup["target_mean"] == pytest.approx(pooled.target_mean_, rel=1e-12)
    assert setup["target_scale"] == pytest.approx(pooled.target_scale_, rel=1e-9)
    assert setup["patients"] == sum(len(d) for d in parts)
    calibration = functools.reduce(operator.add, (task.calibration(d, setup, state) for d in parts))
    model = task.model(setup, state)
    counts = {f: {tuple(float(v) for v in k.split(",")): c for k, c in cs.items()}
              for f, cs in calibration.counts.items()}
    np.testing.assert_allclose(model.reference_from_counts(counts), pooled.reference_, atol=1e-6)
    assert int(calibration.arrays["residual_histogram"].sum()) == setup["patients"]


def test_population_ar_from_summed_statistics_equals_the_pooled_fit(cgm_csv):
    model = GlucoseForecaster()
    points = [model.points(d[0]) for _, d in partitions("cgm", cgm_csv, "subject")]
    sums = functools.reduce(operator.add, (Sums(ar_sums([p])) for p in points))
    federated = ar_from_sums(sums.arrays, tuple(model.horizons))
    pooled = ARForecaster().fit(points)
    np.testing.assert_allclose(federated.predict(points[0]), pooled.predict(points[0]), atol=1e-6)


def test_histogram_intervals_contain_the_exact_conformal_ones():
    rng = np.random.default_rng(0)
    for n in (7, 100, 2001):
        residual = rng.normal(0, 0.4, n)
        counts = np.histogram(residual, EDGES)[0]
        width = EDGES[1] - EDGES[0]
        for coverage in (0.8, 0.9):
            lo, hi = conformal_bounds(residual, coverage)
            h_lo, h_hi = histogram_conformal(counts, EDGES, coverage)
            assert lo - width - 1e-9 <= h_lo <= lo + 1e-9
            assert hi - 1e-9 <= h_hi <= hi + width + 1e-9


def test_client_step_meta_trains_on_own_data_and_small_clients_refuse(cgm_csv, warfarin_csv):
    torch.manual_seed(0)
    task = FederatedGlucose(_settings("cgm", cgm_csv, local_steps=2))
    data = client_data("cgm", cgm_csv, "subject", 0)
    setup, state = task.setup(task.statistics(data))
    new, weight, loss = task.train(data, setup, state, round_=1)
    assert weight == 1.0 and np.isfinite(loss) and new.keys() == state.keys()
    assert any(not torch.equal(new[k], state[k]) for k in state)  # the network moved
    again, _, _ = task.train(data, setup, state, round_=1)
    assert all(torch.equal(again[k], new[k]) for k in new)  # deterministic
    tiny = client_data("warfarin", warfarin_csv, "race", 0).head(5)
    with pytest.raises(DataError, match="needs 10 to take part"):
        FederatedWarfarin(_settings("warfarin", warfarin_csv)).statistics(tiny)


# -- Flower simulation ------------------------------------------------------------------------------
flwr = pytest.importorskip("flwr", reason="Flower is not installed: pip install 'medmeta[federated]'")


def _fail_in_round_two(message, context, call_next):
    """A client mod: partition 1 crashes in round 2, as a device that dies mid-round would."""
    if message.metadata.message_type == "train" and context.node_config["partition-id"] == 1 \
            and int(message.content["config"]["server-round"]) == 2:
        raise RuntimeError("device lost power")
    return call_next(message, context)


def test_client_errors_reach_the_server_without_patient_data():
    from medmeta.federated.app import ClientFailure, without_patient_data

    def bad_record(message, context):
        raise DataError("not a number", source="/data/iwpc.csv", row=12, field="weight_kg", record_id="PA123")

    def crash(message, context):
        raise ValueError("could not convert 'PA123: 71.5 kg'")

    with pytest.raises(ClientFailure) as failure:
        without_patient_data(bad_record)(None, None)
    assert str(failure.value) == "DataError: not a number (field 'weight_kg')"
    assert failure.value.__cause__ is None and failure.value.__suppress_context__
    with pytest.raises(ClientFailure, match=r"^ValueError$"):
        without_patient_data(crash)(None, None)


def test_simulation_goes_on_without_a_client_that_fails_mid_round(warfarin_csv, tmp_path):
    from typer.testing import CliRunner

    from medmeta.cli import app
    from medmeta.federated.simulation import simulate

    settings = FederatedSettings(task="warfarin", data=str(warfarin_csv), output=str(tmp_path / "model"), rounds=2,
                                 local_steps=2)
    seen = []
    report = simulate(settings, client_mods=[_fail_in_round_two], on_round=lambda r, m: seen.append(r))
    first, second = report["rounds"]
    assert report["clients"] == 4 and seen == [0, 1, 2]
    assert (first["replied"], first["failed"]) == (4, 0)
    assert (second["replied"], second["failed"]) == (3, 1) and "device lost power" in second["failures"][0]
    assert first["bytes_from_client"] > 4 * sum(v.numel() for v in
                                                 WarfarinDoseModel.load(report["model"]).members_[0].parameters())
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model"] == "WarfarinDoseModel" and config["federated"]["rounds"][1]["replied"] == 3
    result = CliRunner().invoke(app, ["warfarin", "eval", "--input", str(warfarin_csv), "--model",
                                      str(tmp_path / "model"), "--json", str(tmp_path / "eval.json"),
                                      "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    scored = json.loads((tmp_path / "eval.json").read_text())["methods"]["medmeta"]["overall"]
    assert scored["n"] > 400 and scored["mae"]["value"] < 15
    # and through the FHIR path: `warfarin suggest --model` proposes the federated model's doses
    records = tmp_path / "fhir"
    assert CliRunner().invoke(app, ["fhir", "from-iwpc", str(warfarin_csv), "--out", str(records)]).exit_code == 0
    result = CliRunner().invoke(app, ["warfarin", "suggest", "--input", str(records), "--model",
                                      str(tmp_path / "model"), "--output", str(tmp_path / "proposals")])
    assert result.exit_code == 0, result.output
    proposals = [json.loads(line) for line in (tmp_path / "proposals" / "MedicationRequest.ndjson").open()]
    frame, _ = load_iwpc(warfarin_csv)
    federated = WarfarinDoseModel.load(tmp_path / "model").suggest(frame).set_index("subject_id")["dose_mg_week"]
    shipped = WarfarinDoseModel.load(model_dir("warfarin")).suggest(frame).set_index("subject_id")["dose_mg_week"]
    doses = {p["subject"]["reference"].removeprefix("Patient/"):
             p["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] for p in proposals}
    assert len(doses) == len(frame)
    ids = list(doses)
    np.testing.assert_allclose([doses[i] for i in ids], federated.loc[ids], atol=0.051)
    assert np.abs(federated.loc[ids] - shipped.loc[ids]).max() > 0.1  # not the shipped model's doses


def test_cli_trains_a_glucose_model_that_cgm_eval_scores(cgm_csv, tmp_path):
    from typer.testing import CliRunner

    from medmeta.cli import app

    out = tmp_path / "glucose"
    result = CliRunner().invoke(app, ["federated", "train", "--task", "cgm", "--clients", "3", "--rounds", "2",
                                      "--local-steps", "2", "--input", str(cgm_csv), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 clients (subject), 2 rounds" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "GlucoseForecaster" and config["training"]["subjects"] == 3
    assert [r["replied"] for r in config["federated"]["rounds"]] == [3, 3]
    result = CliRunner().invoke(app, ["cgm", "eval", "--input", str(cgm_csv), "--model", str(out), "--json",
                                      str(tmp_path / "eval.json"), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    methods = json.loads((tmp_path / "eval.json").read_text())["methods"]
    assert methods["medmeta"]["n"] == methods["persistence"]["n"] > 1000
    assert methods["medmeta"]["rmse"] < methods["persistence"]["rmse"]  # it learned something in 2 rounds


def test_cli_rejects_more_clients_than_partitions(warfarin_csv, tmp_path):
    from typer.testing import CliRunner

    from medmeta.cli import app

    result = CliRunner().invoke(app, ["federated", "train", "--task", "warfarin", "--clients", "5", "--input",
                                      str(warfarin_csv), "--output", str(tmp_path)])
    assert result.exit_code != 0 and "5 clients asked for, but the file has 4 warfarin partitions by race" in str(
        result.exception)

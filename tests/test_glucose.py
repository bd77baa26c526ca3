import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medmeta.cli import app
from medmeta.datasets.cgm import CGMSeries, load_cgm
from medmeta.models import model_dir
from medmeta.treatment.glucose import ARForecaster, GlucoseForecaster, adaptation_split, forecast_points
from medmeta.treatment.glucose_eval import METHODS, clarke_zones, evaluate, scores


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def series(hours=48.0, minutes=5, seed=0, start="2024-01-01 00:02:00", sid="s1", drop=()):
    """A smooth synthetic trace (meals as bumps) every ``minutes``, without the readings at indices ``drop``."""
    rng = np.random.default_rng(seed)
    t = pd.date_range(start, periods=int(hours * 60 / minutes), freq=f"{minutes}min")
    hour = (t.hour + t.minute / 60).to_numpy()
    g = 110 + 40 * np.exp(-((hour - 8) % 24) / 2) * ((hour - 8) % 24 < 6) + 30 * np.sin(hour / 24 * 2 * np.pi)
    g = g + rng.normal(0, 3, len(t))
    keep = np.setdiff1d(np.arange(len(t)), list(drop))
    return CGMSeries(sid, t[keep], g[keep])


@pytest.fixture(scope="module")
def shipped():
    return GlucoseForecaster.load(model_dir("glucose"))


def test_forecast_points_bridge_short_gaps_only():
    full = forecast_points(series(hours=6), n_lags=12, horizons=(30,))
    assert len(full) > 0 and full.origin.is_monotonic_increasing
    short_gap = forecast_points(series(hours=6, drop=[30, 31]), n_lags=12, horizons=(30,))
    long_gap = forecast_points(series(hours=6, drop=range(30, 40)), n_lags=12, horizons=(30,))
    assert len(full) > len(short_gap) > len(long_gap)
    # every input window of the long-gap series lies on one side of the gap
    gap_start, gap_end = series(hours=6).time[29], series(hours=6).time[40]
    window = pd.Timedelta(minutes=55)
    assert not ((long_gap.origin > gap_start) & (long_gap.origin - window < gap_end)).any()
    # a target with no reading is NaN, never interpolated (the point stays for its other horizon)
    p = forecast_points(series(hours=6, drop=[50]), n_lags=12, horizons=(30, 60))
    missing_time = series(hours=6).time[50]
    hit = p.origin + pd.Timedelta(minutes=30) == missing_time
    assert hit.any() and np.isnan(p.targets[hit, 0]).all()


def test_forecast_points_of_tiny_series_are_empty():
    assert len(forecast_points(series(hours=0.5))) == 0
    assert len(forecast_points(CGMSeries("x", pd.DatetimeIndex(["2024-01-01"]), np.array([100.0])))) == 0


def test_adaptation_split_keeps_the_future_out():
    p = forecast_points(series(hours=48), horizons=(30, 60))
    adapt, scored = adaptation_split(p, p.origin[0], 24)
    end = p.origin[0] + pd.Timedelta(hours=24)
    assert (p.origin[adapt] + pd.Timedelta(minutes=60) < end).all()
    assert (p.origin[scored] >= end).all() and not (adapt & scored).any()


def test_clarke_zones_of_known_pairs():
    ref = np.array([100, 50, 200, 60, 100, 250, 100, 65])
    pred = np.array([110, 60, 50, 200, 220, 150, 125, 90])
    assert clarke_zones(ref, pred).tolist() == ["A", "A", "E", "E", "C", "D", "B", "D"]


def test_scores_and_alerts():
    y = np.array([60.0, 65, 100, 200, 150])
    p = np.array([65.0, 90, 100, 190, 185])
    s = scores(y, p)
    assert s["hypo_alerts"] == {"events": 2, "alerts": 1, "precision": 1.0, "recall": 0.5}
    assert s["hyper_alerts"] == {"events": 1, "alerts": 2, "precision": 0.5, "recall": 1.0}
    assert s["rmse"] == pytest.approx(np.sqrt(np.mean((p - y) ** 2)), abs=1e-3)


def test_untrained_forecaster_is_persistence_and_training_is_deterministic(tmp_path):
    data = [series(seed=i, sid=f"s{i}") for i in range(3)]
    untrained = GlucoseForecaster(meta_steps=0).fit(data)
    p = untrained.points(data[0])
    np.testing.assert_allclose(untrained.predict(p), np.repeat(p.lags[:, -1:], 12, axis=1), atol=1e-3)

    a = GlucoseForecaster(meta_steps=15, meta_batch_size=2, query_size=32).fit(data)
    b = GlucoseForecaster(meta_steps=15, meta_batch_size=2, query_size=32).fit(data)
    np.testing.assert_array_equal(a.predict(p), b.predict(p))
    loaded = GlucoseForecaster.load(a.save(tmp_path / "g"))
    np.testing.assert_allclose(loaded.adapt(p).predict(p), a.adapt(p).predict(p), atol=1e-5)


def test_ar_forecaster_learns_a_trend():
    t = pd.date_range("2024-01-01", periods=400, freq="5min")
    rising = CGMSeries("r", t, 100 + 0.5 * np.arange(400))
    ar = ARForecaster().fit([forecast_points(rising, horizons=(30,))])
    p = forecast_points(rising, horizons=(30,))
    np.testing.assert_allclose(ar.predict(p)[:, 0], p.targets[:, 0], atol=1e-6)
    assert ARForecaster.from_dict(ar.to_dict()).predict(p).shape == (len(p), 1)


def test_evaluate_reports_odd_subjects_instead_of_crashing(shipped):
    data = {
        "ok": series(hours=60, seed=1, sid="ok"),
        "libre": series(hours=60, minutes=15, seed=2, sid="libre"),  # 15-minute readings
        "gappy": series(hours=60, seed=3, sid="gappy", drop=range(20, 280)),  # most of the first day missing
        "short": series(hours=3, seed=4, sid="short"),
        "one": CGMSeries("one", pd.DatetimeIndex(["2024-01-01"]), np.array([100.0])),
    }
    result = evaluate(shipped, data, adapt_hours=24, horizon=30, n_boot=50)
    assert set(result["skipped"]) == {"gappy", "short", "one"}
    assert "first 24 h" in result["skipped"]["gappy"] and set(result["per_subject"]) == {"ok", "libre"}
    n = {m: result["methods"][m]["n"] for m in METHODS}
    assert len(set(n.values())) == 1 and n["medmeta"] > 0  # every method on the same points
    assert result["population_model"].startswith("leave-one-subject-out")


def test_single_subject_uses_the_shipped_population_model(shipped):
    population = ARForecaster.from_dict(shipped.config_["population_ar"])
    result = evaluate(shipped, {"a": series(hours=48)}, horizon=60, population=population, n_boot=20)
    assert result["subjects_scored"] == 1 and "shipped" in result["population_model"]


def test_cli_eval_on_the_sample_file(tmp_path, samples):
    out = tmp_path / "cgm.json"
    csv = samples / "cgm_iglu" / "example_data_hall.csv"
    result = CliRunner().invoke(app, ["cgm", "eval", "--input", str(csv), "--adapt-hours", "24", "--horizon", "30",
                                      "--json", str(out), "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(METHODS) <= set(data["methods"])
    for m in METHODS:
        assert {"rmse", "mae", "clarke_a", "clarke_ab", "n"} <= set(data["methods"][m])
    assert data["subjects_scored"] == len(load_cgm(csv).data) - len(data["skipped"])
    some = next(iter(data["per_subject"].values()))
    assert set(METHODS) <= set(some["methods"])


def test_cli_eval_rejects_a_file_without_glucose(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,time,value\na,2024-01-01 00:00,100\n")
    result = CliRunner().invoke(app, ["cgm", "eval", "--input", str(bad), "--json", str(tmp_path / "o.json")])
    assert result.exit_code != 0
    assert "gl" in str(result.exception)


@pytest.mark.slow
def test_adapted_model_beats_the_population_model_on_held_out_subjects(full_data):
    """Meta-train on 14 Hall subjects, adapt on the first day of the 5 others: lower RMSE than the population AR."""
    series = load_cgm(full_data / "cgm_iglu" / "example_data_hall.csv").data
    ids = sorted(series)
    held_out = ids[::4]
    model = GlucoseForecaster(meta_steps=300).fit([series[i] for i in ids if i not in held_out])
    result = evaluate(model, {i: series[i] for i in held_out}, horizon=30, n_boot=50)
    rmse = {m: result["methods"][m]["rmse"] for m in METHODS}
    assert rmse["medmeta"] < rmse["population"] < rmse["persistence"], rmse

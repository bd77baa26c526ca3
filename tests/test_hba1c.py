import json

import numpy as np
import pytest
from typer.testing import CliRunner

from medmeta.cli import app
from medmeta.fhir import patient_tasks, read
from medmeta.fhir.tasks import forecast_examples
from medmeta.models import model_dir
from medmeta.treatment.hba1c import HbA1cForecaster, evaluate


@pytest.fixture(scope="module")
def tasks(samples):
    return patient_tasks(read(samples / "synthea_fhir_r4" / "bundles"), k_support=3)


def test_forecast_rows_match_the_task_rows(samples, tasks):
    tables = read(samples / "synthea_fhir_r4" / "bundles")
    for task in tasks[:3]:
        pid, when = task.metadata["patient_id"], task.metadata["query_times"][0]
        assert np.allclose(forecast_examples(tables, {pid: when})[pid], task.query_x[0])


def test_training_adaptation_and_save_load(tasks, tmp_path):
    model = HbA1cForecaster(meta_steps=30).fit(tasks)
    t = tasks[0]
    adapted = model.adapt(t.support_x, t.support_y).predict(t.query_x)
    assert adapted.shape == (t.n_query,) and np.isfinite(adapted).all()
    assert not np.allclose(adapted, model.predict(t.query_x))  # adapting changes the forecast
    again = HbA1cForecaster.load(model.save(tmp_path / "m"))
    assert np.allclose(again.adapt(t.support_x, t.support_y).predict(t.query_x), adapted, atol=1e-5)


def test_cross_validation_reports_every_method_on_the_same_results(tasks):
    r = evaluate(tasks, folds=4, n_boot=50, params={"meta_steps": 20})
    assert set(r["methods"]) == {"medmeta", "medmeta_not_adapted", "last_value", "population"}
    assert r["patients"] == len(tasks) and r["query_results"] == sum(t.n_query for t in tasks)
    for v in r["methods"].values():
        assert v["mae"]["ci95"][0] <= v["mae"]["value"] <= v["mae"]["ci95"][1]
    assert "not causal" in r["disclaimer"]


def test_shipped_model_loads_and_cli_eval(samples, tmp_path):
    model = HbA1cForecaster.load(model_dir("hba1c"))
    assert model.training_["patients"] == 127
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["hba1c", "eval", "--input", str(samples / "synthea_fhir_r4" / "bundles"),
                                      "--json", str(out), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["methods"]["last_value"]["mae"]["value"] > 0

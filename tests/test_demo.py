import json

import orjson
import pytest
from typer.testing import CliRunner

from medmeta.cli import app
from medmeta.learners import load_learner


def test_demo_meta_learns_then_scores_the_sample_export_end_to_end(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--quick", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "not for clinical use" in result.output
    # 1. few-shot: meta-trained, tested on data sets it never saw, saved as weights only
    assert "meta-test pneumonia" in result.output
    fewshot = json.loads((tmp_path / "fewshot" / "results.json").read_text())
    names = [e["benchmark"] for e in fewshot["evaluations"]]
    assert names[1:] == ["meta-test pneumonia", "meta-test breast", "meta-test organa-held-out"]
    for e in fewshot["evaluations"]:
        assert 0 <= e["accuracy"] <= 1 and e["ci95"] > 0 and e["episodes"] == 20
    assert fewshot["training"]["episodes"] >= 1 and fewshot["budget_seconds"] == 3.0
    assert (tmp_path / "fewshot" / "model" / "model.safetensors").is_file()
    assert load_learner(tmp_path / "fewshot" / "model").get_params()["in_channels"] == 3
    # 2. the batch job on the sample export
    hint = " ".join(result.output.split()).split("medmeta dashboard ")[1].split()
    assert hint[:2] == ["--source", str(tmp_path / "export")]
    dashboard_help = CliRunner().invoke(app, ["dashboard", "--help"]).output
    assert all(option in dashboard_help for option in hint if option.startswith("--"))  # a command that works
    manifest = json.loads((tmp_path / "results" / "manifest.json").read_text())
    contents = json.loads((tmp_path / "export.json").read_text())
    p = manifest["counts"]["patients"]
    assert p["read"] == 14 + 13 + contents["iwpc"]["patients"] + contents["cgm"]["subjects"] == 533
    assert p["read"] == p["scored"] + p["skipped"] + p["rejected"]
    outcomes = [orjson.loads(x) for x in (tmp_path / "results" / "outcomes.ndjson").read_bytes().splitlines()]
    assert len({o["patient"] for o in outcomes}) == len(outcomes) == p["read"]
    assert manifest["counts"]["results"]["MedicationRequest"] == 500  # every IWPC patient
    assert manifest["counts"]["results"]["Observation"] == 2 * 6  # 30 and 60 min for every CGM subject
    assert {m["name"] for m in manifest["models"]} == {"warfarin-dose", "warfarin-fusion", "glucose-forecast",
                                                       "fewshot-diagnosis"}


def test_bad_data_dir_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--quick", "--output", str(tmp_path), "--data-dir",
                                      str(tmp_path / "nowhere")])
    assert result.exit_code != 0
    assert "data directory does not exist" in str(result.exception)


def test_console_script_reports_errors_in_one_line(tmp_path, monkeypatch, capsys):
    from medmeta.cli import main

    monkeypatch.setattr("sys.argv", ["medmeta", "demo", "--data-dir", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "error: " in capsys.readouterr().err


def test_the_sample_export_is_rebuilt_for_another_data_root(tmp_path):
    from medmeta.demo import build_sample_export
    from medmeta.paths import sample_data_dir

    first = build_sample_export(tmp_path / "export")
    assert first["data_dir"] == str(sample_data_dir().resolve())
    assert build_sample_export(tmp_path / "export") == first  # built once per data root
    other = tmp_path / "copy"
    (tmp_path / "export.json").write_text(json.dumps({**first, "data_dir": str(other)}))
    assert build_sample_export(tmp_path / "export")["data_dir"] == first["data_dir"]  # rebuilt, not reused

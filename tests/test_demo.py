import json

from typer.testing import CliRunner

from medmeta.cli import app
from medmeta.learners import load_learner


def test_demo_quick_runs_end_to_end_on_the_samples(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--quick", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "meta-test pneumonia" in result.output and "Decision support" in result.output
    results = json.loads((tmp_path / "results.json").read_text())
    names = [e["benchmark"] for e in results["evaluations"]]
    assert names[1:] == ["meta-test pneumonia", "meta-test breast", "meta-test organa-held-out"]
    for e in results["evaluations"]:
        assert 0 <= e["accuracy"] <= 1 and e["ci95"] > 0 and e["episodes"] == 20
    assert results["training"]["episodes"] >= 1
    assert load_learner(tmp_path / "model").get_params()["in_channels"] == 3


def test_bad_data_dir_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--quick", "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code != 0
    assert "data directory does not exist" in str(result.exception)


def test_console_script_reports_errors_in_one_line(tmp_path, monkeypatch, capsys):
    import pytest

    from medmeta.cli import main

    monkeypatch.setattr("sys.argv", ["medmeta", "demo", "--quick", "--data-dir", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "error: " in capsys.readouterr().err

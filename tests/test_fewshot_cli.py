import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medmeta.cli import app, main
from medmeta.errors import DataError
from medmeta.paths import medmnist_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
PROTONET = REPO / "monai_bundles" / "fewshot_protonet_classification"
MATCHING = REPO / "monai_bundles" / "fewshot_matching_classification"


def unseen_file(path: Path, counts=(30, 30, 30, 30, 20), size: int = 40) -> Path:
    """A MedMNIST-layout file like the held-out one: colour, 5 classes, imbalanced, another size."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(counts)), counts)
    images = rng.integers(0, 60, (len(labels), size, size, 3), dtype=np.uint8)
    for i, c in enumerate(labels):  # a class-specific colour blob, so the classes can be told apart
        images[i, 5 + 5 * c: 15 + 5 * c, 10:20, c % 3] = 230
    splits = {s: (images, labels[:, None].astype(np.uint8)) for s in ("train", "val", "test")}
    np.savez(path, **{f"{s}_{k}": v for s, (x, y) in splits.items() for k, v in (("images", x), ("labels", y))})
    return path


def test_eval_on_an_unseen_imbalanced_colour_file(tmp_path):
    data = unseen_file(tmp_path / "unseenmnist.npz")
    out = tmp_path / "result.json"
    result = CliRunner().invoke(app, ["fewshot", "eval", "--bundle", str(PROTONET), "--data", str(data), "--split",
                                      "test", "--ways", "5", "--shots", "10", "--episodes", "20", "--json", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert {"accuracy", "ci95", "episodes", "ways", "shots"} <= r.keys()
    assert (r["ways"], r["shots"], r["episodes"], r["queries"]) == (5, 10, 20, 15)
    assert 0.2 < r["accuracy"] <= 1 and r["ci95"] >= 0
    assert r["short_classes"] == {"class 4": 10}  # 20 images: 10 shots, 10 queries in every episode
    assert "class 4" in result.output and "Decision support" in result.output
    cal = r["calibration"]  # every query, binned by its predicted class's probability
    assert cal["queries"] == 20 * (4 * 15 + 10) == sum(b["n"] for b in cal["bins"])
    assert sum(b["n"] * b["accuracy"] for b in cal["bins"]) / cal["queries"] == pytest.approx(r["accuracy"], abs=0.02)
    assert all(0.2 <= b["low"] <= b["confidence"] <= b["high"] <= 1 for b in cal["bins"]) and 0 <= cal["ece"] <= 1


def test_eval_on_a_real_grey_file_with_the_matching_bundle(tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["fewshot", "eval", "--bundle", str(MATCHING), "--data",
                                      str(medmnist_file("pneumoniamnist")), "--ways", "2", "--shots", "5",
                                      "--episodes", "30", "--json", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert r["learner"] == "MatchingNetwork" and r["short_classes"] == {} and r["episodes"] == 30


@pytest.mark.parametrize(("args", "message"), [
    (["--ways", "6", "--shots", "1"], "6-way episodes need 6 classes; the test split has 5"),
    (["--ways", "5", "--shots", "20"], "too few in {'class 4': 20}"),
    (["--ways", "1", "--shots", "1"], "need ways >= 2"),
])
def test_impossible_requests_are_refused_with_a_clear_error(tmp_path, args, message):
    data = unseen_file(tmp_path / "unseenmnist.npz")
    result = CliRunner().invoke(app, ["fewshot", "eval", "--bundle", str(PROTONET), "--data", str(data),
                                      "--episodes", "5", *args])
    assert isinstance(result.exception, DataError), result.output
    assert message in str(result.exception) and "unseenmnist.npz" in str(result.exception)


def test_the_console_script_reports_a_refusal_in_one_line(tmp_path, monkeypatch, capsys):
    data = unseen_file(tmp_path / "unseenmnist.npz")
    monkeypatch.setattr("sys.argv", ["medmeta", "fewshot", "eval", "--bundle", str(PROTONET), "--data", str(data),
                                     "--ways", "9", "--shots", "1"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2 and "error: " in capsys.readouterr().err


def test_memory_commands_add_a_class_and_predict_with_evidence(tmp_path):
    rng = np.random.default_rng(0)
    files = {}
    for label, level in (("normal", 40), ("effusion", 200)):
        for i in range(3):
            path = tmp_path / f"{label}{i}.png"
            Image.fromarray(np.clip(rng.normal(level, 10, (32, 32)), 0, 255).astype(np.uint8)).save(path)
            files.setdefault(label, []).append(str(path))
    memory = tmp_path / "memory"
    runner = CliRunner()
    for label, paths in files.items():
        r = runner.invoke(app, ["fewshot", "memory", "add", "--bundle", str(PROTONET), "--memory", str(memory),
                                "--label", label, *paths])
        assert r.exit_code == 0, r.output
    out = tmp_path / "p.json"
    r = runner.invoke(app, ["fewshot", "memory", "predict", "--bundle", str(PROTONET), "--memory", str(memory),
                            "--top-k", "2", "--json", str(out), files["effusion"][0]])
    assert r.exit_code == 0, r.output
    [p] = json.loads(out.read_text())
    assert set(p["probabilities"]) == {"normal", "effusion"} and p["memory_version"] == 2
    assert p["evidence"][0]["source_id"] == "effusion0.png" and p["evidence"][0]["similarity"] > 0.99
    r = runner.invoke(app, ["fewshot", "memory", "show", "--bundle", str(PROTONET), "--memory", str(memory)])
    assert "Version 2, 6 cases" in r.output


def test_calibration_bins_and_expected_calibration_error():
    from medmeta.evaluation import calibration

    proba = np.array([[0.95, 0.05], [0.9, 0.1], [0.6, 0.4], [0.45, 0.55]])
    cal = calibration([(proba, np.array([0, 1, 0, 1]))], bins=5)
    # bins of 0.1 from 0.5: 0.55 (right), 0.6 (right), then 0.95 (right) and 0.9 (wrong) share the last
    assert [(b["low"], b["n"], b["accuracy"]) for b in cal["bins"]] == [(0.5, 1, 1.0), (0.6, 1, 1.0), (0.9, 2, 0.5)]
    assert cal["bins"][2]["confidence"] == pytest.approx(0.925)
    assert cal["ece"] == pytest.approx((0.45 + 0.4 + 2 * 0.425) / 4)

"""Smoke test of the MONAI Label app (monai_bundles/monailabel_app): /info/ and /infer/ on a PNG and a DICOM study."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MONAILABEL = REPO / ".monailabel"
BUNDLES = ["fewshot_matching_classification", "fewshot_protonet_classification"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MONAILABEL / "monailabel").is_dir(),
                       reason="MONAI Label is not installed: run `bash monai_bundles/monailabel_app/setup.sh`"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    studies = tmp_path_factory.mktemp("studies")
    sample = REPO / "monai_bundles" / "fewshot_protonet_classification" / "sample_images"
    shutil.copy(next(sample.glob("bloodmnist_*platelet.png")), studies / "platelet.png")
    shutil.copy(MONAILABEL / "pydicom" / "data" / "test_files" / "CT_small.dcm", studies / "ct.dcm")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(MONAILABEL)}
    process = subprocess.Popen([sys.executable, str(REPO / "monai_bundles" / "monailabel_app" / "serve.py"),
                                "--studies", str(studies), "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"MONAI Label did not start: {process.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/info/", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(2)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_info_lists_the_bundles_as_classifiers(server):
    info = httpx.get(f"{server}/info/", timeout=30).json()
    assert sorted(info["models"]) == BUNDLES
    for model in info["models"].values():
        assert model["type"] == "classification" and len(model["labels"]) == 14


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("study", ["platelet", "ct"])
def test_infer_returns_class_probabilities(server, bundle, study):
    response = httpx.post(f"{server}/infer/{bundle}", params={"image": study, "output": "json"}, timeout=120)
    assert response.status_code == 200, response.text[-2000:]
    prediction = response.json()["prediction"]
    scores = np.array([p["score"] for p in prediction])
    assert len(prediction) == 14 and np.all(scores >= 0) and abs(scores.sum() - 1) < 1e-4
    if study == "platelet":  # a test image of a class in the bundles' support set
        assert max(prediction, key=lambda p: p["score"])["label"] == "bloodmnist:platelet"

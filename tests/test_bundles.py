"""The few-shot MONAI bundles as shipped: MONAI's own tools accept and run them, from any directory."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ckpt_export, verify_metadata, verify_net_in_out
from PIL import Image

from medmeta.bundle import AsChannelsd, ScaleToUnitd, bundle_root, class_names, load_bundle, read_metadata
from medmeta.imaging import to_tensor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "monai_bundles" / "schema" / "meta_schema_20240725.json"
BUNDLES = sorted(p for p in (REPO / "monai_bundles").glob("*_classification") if p.is_dir())
ids = [b.name for b in BUNDLES]


def test_both_learner_families_are_bundled():
    assert ids == ["fewshot_matching_classification", "fewshot_protonet_classification"]


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_metadata_is_valid_against_the_shipped_schema(bundle):
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))  # offline
    meta = read_metadata(bundle)
    assert meta["version"] in meta["changelog"]
    fmt = meta["network_data_format"]
    assert set(fmt["inputs"]) == {"image"} and set(fmt["outputs"]) == {"pred"}
    assert fmt["outputs"]["pred"]["num_channels"] == len(class_names(meta)) == 14
    network_def = json.loads((bundle / "configs" / "inference.json").read_text())["network_def"]
    assert network_def["n_classes"] == 14  # a literal: MONAI Label parses the config without the metadata
    for name in ("LICENSE", "docs/README.md", "docs/data_license.txt", "configs/train.json",
                 "configs/inference.json", "configs/evaluate.json", "models/model.pt", "models/training.json"):
        assert (bundle / name).is_file(), name
    assert (bundle / "models" / "model.pt").stat().st_size < 8_000_000


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_network_in_out_and_torchscript_export(bundle, tmp_path):
    config, meta = str(bundle / "configs" / "inference.json"), str(bundle / "configs" / "metadata.json")
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, device="cpu")
    exported = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(exported), ckpt_file=str(bundle / "models" / "model.pt"),
                meta_file=meta, config_file=config)
    scripted = torch.jit.load(str(exported))
    network = load_bundle(bundle)
    x = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.allclose(scripted(x), network(x), atol=1e-5)


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_inference_runs_from_another_directory_and_matches_the_network(bundle, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (28, 28, 3), dtype=np.uint8), rng.integers(0, 255, (28, 28), dtype=np.uint8),
              rng.integers(0, 255, (40, 33), dtype=np.uint8)]  # colour, grey, another size
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(images / f"{i}.png")
    out = tmp_path / "out"
    from monai.bundle import run

    cwd = os.getcwd()
    os.chdir(tmp_path)  # nothing resolves relative to the working directory
    try:
        run(config_file=str(bundle / "configs" / "inference.json"), dataset_dir=str(images), output_dir=str(out),
            logging_file=False)
    finally:
        os.chdir(cwd)
    with open(out / "predictions.csv") as f:
        rows = sorted(csv.reader(f))
    assert [Path(r[0]).name for r in rows] == ["0.png", "1.png", "2.png"]
    probabilities = np.array([[float(v) for v in r[1:]] for r in rows])
    assert probabilities.shape == (3, 14) and np.allclose(probabilities.sum(1), 1, atol=1e-4)

    network = load_bundle(bundle)  # the same images straight from arrays: same orientation, scaling, resizing
    with torch.no_grad():
        direct = [network(to_tensor(a[None], 3, 28)).softmax(1)[0].numpy() for a in arrays[:2]]
    assert np.allclose(probabilities[:2], direct, atol=1e-4)


def test_the_bundle_command_line_runs_inference_from_any_directory(tmp_path):
    bundle = REPO / "monai_bundles" / "fewshot_protonet_classification"
    result = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                             str(bundle / "configs" / "inference.json"), "--output_dir", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "predictions.csv") as f:
        rows = list(csv.reader(f))
    samples = sorted((bundle / "sample_images").glob("*.png"))
    assert len(rows) == len(samples) == 14
    # the samples are test images of the 14 support classes: most are recognised
    names = class_names(read_metadata(bundle))
    right = sum(names[int(np.argmax([float(v) for v in r[1:]]))].split(":")[1][:10].replace(" ", "-").lower()
                in Path(r[0]).stem for r in rows)
    assert right >= 10, right


def test_bundle_root_is_the_running_bundles_folder(tmp_path):
    assert bundle_root(default="fallback") == "fallback"  # outside a MONAI workflow
    bundle = tmp_path / "copy"
    shutil.copytree(REPO / "monai_bundles" / "fewshot_protonet_classification" / "configs", bundle / "configs")
    (bundle / "configs" / "probe.json").write_text(json.dumps({
        "imports": ["$import medmeta.bundle as medmeta_bundle"],
        "bundle_root": "$medmeta_bundle.bundle_root()", "run": ["@bundle_root"]}))
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=str(bundle / "configs" / "probe.json"), workflow_type=None,
                              logging_file=False)
    workflow.initialize()
    assert workflow.run() == [str(bundle.resolve())]


def test_weights_are_loaded_without_running_code(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(REPO / "monai_bundles" / "fewshot_protonet_classification", bundle,
                    ignore=shutil.ignore_patterns("sample_images"))
    torch.save({"payload": Path("/")}, bundle / "models" / "model.pt")  # a pickle with an arbitrary object
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        load_bundle(bundle)


def test_channels_are_brought_to_what_the_network_expects():
    grey, rgba = torch.rand(1, 5, 5), torch.rand(4, 5, 5)
    assert AsChannelsd("image", 3)({"image": grey})["image"].shape == (3, 5, 5)
    assert AsChannelsd("image", 3)({"image": rgba})["image"].shape == (3, 5, 5)
    one = AsChannelsd("image", 1)({"image": rgba[:3]})["image"]
    assert torch.allclose(one[0], 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2])
    assert AsChannelsd("image", 3)({"image": torch.rand(1, 5, 6, 1)})["image"].shape == (3, 5, 6)  # a DICOM slice


def test_intensities_are_scaled_as_in_training():
    eight_bit = torch.tensor([[[0, 51, 255]]], dtype=torch.uint8)
    assert torch.allclose(ScaleToUnitd("image")({"image": eight_bit})["image"], torch.tensor([[[0, 0.2, 1]]]))
    ct = torch.tensor([[[-1000, 0, 1000]]], dtype=torch.int16)
    assert torch.allclose(ScaleToUnitd("image")({"image": ct})["image"], torch.tensor([[[0, 0.5, 1]]]))


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_a_memory_exported_as_a_bundle_runs_in_monai_with_the_memorys_classes(bundle, tmp_path):
    from monai.bundle import run

    from medmeta.bundle import export
    from medmeta.memory import SupportMemory

    rng = np.random.default_rng(1)
    memory = SupportMemory(tmp_path / "memory", load_bundle(bundle))
    for c, label in enumerate(["effusion", "normal", "nodule"]):
        memory.add(np.clip(rng.normal(60 + 70 * c, 20, (4, 28, 28)), 0, 255).astype(np.uint8), label)
    out = export(bundle, memory, tmp_path / "exported")
    config, meta = str(out / "configs" / "inference.json"), str(out / "configs" / "metadata.json")
    verify_metadata(meta_file=meta, filepath=str(SCHEMA))
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, device="cpu")
    assert class_names(read_metadata(out)) == ["effusion", "nodule", "normal"]  # sorted
    assert read_metadata(out)["version"].endswith("+memory3")

    query = np.clip(rng.normal(200, 20, (28, 28)), 0, 255).astype(np.uint8)
    (tmp_path / "q").mkdir()
    Image.fromarray(query).save(tmp_path / "q" / "query.png")
    run(config_file=config, dataset_dir=str(tmp_path / "q"), output_dir=str(tmp_path / "pred"), logging_file=False)
    with open(tmp_path / "pred" / "predictions.csv") as f:
        [row] = list(csv.reader(f))
    expected = memory.predict(query[None])[0].probabilities
    assert np.allclose([float(v) for v in row[1:]], [expected[c] for c in ("effusion", "nodule", "normal")],
                       atol=2e-3)  # the exported weights are float16

"""MONAI bundles of the few-shot learners: what their configs call, and loading them back safely.

The bundles under ``monai_bundles/`` build their network with ``_target_: medmeta.learners...``
and call the functions here, so they run from any directory with the code imported from the
installed package. A bundle's network is a :class:`~medmeta.learners.FewShotLearner` holding a
remembered support set; ``forward(image)`` returns scores over that set's classes, which the
bundle's metadata names in ``channel_def``.
"""

from __future__ import annotations

import copy
import inspect
import io
import json
import shutil
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

import medmeta
from medmeta.errors import DataError
from medmeta.imaging import _LUMA
from medmeta.learners.base import FewShotLearner
from medmeta.memory import SupportMemory, atomic_write, fingerprint

MODEL_FILE = "models/model.pt"
TRAINING_FILE = "models/training.json"


def bundle_root(default: str = ".") -> str:
    """The folder of the bundle whose config MONAI is running, found from MONAI's running workflow.

    Bundle configs set ``"bundle_root": "$medmeta.bundle.bundle_root()"`` so that their paths
    resolve from any working directory (``--bundle_root DIR`` still overrides it). Outside a
    MONAI workflow it returns ``default``.
    """
    from monai.bundle import ConfigWorkflow

    frame = inspect.currentframe()
    while frame is not None:
        workflow = frame.f_locals.get("self")
        if isinstance(workflow, ConfigWorkflow):
            config_root = Path(workflow.config_root_path)
            return str((config_root.parent if config_root.name == "configs" else config_root).resolve())
        frame = frame.f_back
    return default


def read_metadata(bundle: str | Path) -> dict:
    path = Path(bundle) / "configs" / "metadata.json"
    if not path.is_file():
        raise DataError("not a MONAI bundle: configs/metadata.json missing", source=Path(bundle))
    return json.loads(path.read_text())


def class_names(metadata: Mapping) -> list[str]:
    """The output classes named in the metadata's ``channel_def`` of ``pred``, by channel."""
    channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    return [channels[str(i)] for i in range(len(channels))]


def load_bundle(bundle: str | Path) -> FewShotLearner:
    """The network of a bundle (``network_def`` of ``configs/inference.json``) with its weights.

    Weights are read with ``torch.load(weights_only=True)``: tensors only, no code.
    """
    from monai.bundle import ConfigParser

    bundle = Path(bundle).resolve()
    parser = ConfigParser()
    parser.read_meta(bundle / "configs" / "metadata.json")
    parser.read_config(bundle / "configs" / "inference.json")
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network_def")
    if not isinstance(network, FewShotLearner):
        raise DataError(f"network_def is a {type(network).__name__}, not a medmeta few-shot learner",
                        source=bundle / "configs" / "inference.json", field="network_def")
    network.load_state_dict(torch.load(bundle / MODEL_FILE, map_location="cpu", weights_only=True))
    network.classes_ = class_names(parser.get("_meta_"))
    return network.eval()


class AsChannelsd(MapTransform):
    """Bring channel-first images to 2-D with ``channels`` channels.

    Grey is repeated, colour reduced to luma, alpha dropped; a single-slice 3-D image (a DICOM
    file read as a volume) loses its slice dimension.
    """

    def __init__(self, keys: KeysCollection, channels: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            if x.ndim == 4 and 1 in x.shape[1:]:  # one slice of a volume
                x = x.squeeze(1 + list(x.shape[1:]).index(1))
            if x.shape[0] == 4:  # RGBA
                x = x[:3]
            if x.shape[0] == 2:  # grey + alpha
                x = x[:1]
            if x.shape[0] == 1 and self.channels == 3:
                x = x.repeat(3, *([1] * (x.ndim - 1)))
            elif x.shape[0] == 3 and self.channels == 1:
                x = (x * _LUMA.to(x.dtype).view(3, *([1] * (x.ndim - 1)))).sum(0, keepdim=True)
            d[key] = x
        return d


class ScaleToUnitd(MapTransform):
    """Bring intensities to [0, 1] as medmeta's learners were trained: 8-bit images divided by 255,
    deeper ones (16-bit PNG, DICOM) scaled from their own minimum and maximum."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            if x.dtype == torch.uint8:
                d[key] = x.float() / 255
            else:
                x = x.float()
                low, high = x.min(), x.max()
                d[key] = (x - low) / (high - low) if high > low else torch.zeros_like(x)
        return d


def support_sample(labels: np.ndarray, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Up to ``per_class`` random items of every class: indices, class numbers and sorted class names."""
    rng = np.random.default_rng(seed)
    classes = sorted({str(c) for c in labels})
    labels = np.asarray([str(c) for c in labels])
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.concatenate(picks), np.repeat(np.arange(len(classes)), [len(p) for p in picks]), classes


def train(network: FewShotLearner, bundle_root: str | Path, data_dir: str | Path | None = None,
          support_per_class: int = 20, threads: int | None = None) -> dict:
    """Train a bundle's network on the meta-training classes and write ``models/model.pt``.

    Meta-trains on the train split of the protocol's meta-training classes (meta-validating on
    their val split), then remembers ``support_per_class`` train images of each of those
    classes as the bundle's default support set; their names must be the metadata's
    ``channel_def``. Writes the weights (a state dict in float16) and ``models/training.json``.
    """
    from medmeta.protocol import meta_train_pool

    if threads:
        torch.set_num_threads(threads)
    root = Path(bundle_root)
    expected = class_names(read_metadata(root))
    start = time.monotonic()
    x, keys = meta_train_pool("train", network.in_channels, network.image_size, data_dir)
    vx, vkeys = meta_train_pool("val", network.in_channels, network.image_size, data_dir)
    network.fit(x, keys, vx, vkeys)
    idx, ys, classes = support_sample(keys, support_per_class, network.seed)
    if classes != expected:
        raise DataError(f"the meta-training classes {classes} differ from the metadata's channel_def {expected}",
                        source=root / "configs" / "metadata.json", field="channel_def")
    network.remember(x[torch.as_tensor(idx)], ys, classes)
    buffer = io.BytesIO()  # stored as float16 to keep the bundle small; loading converts back to float32
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in network.state_dict().items()}, buffer)
    atomic_write(root / MODEL_FILE, buffer.getvalue())
    summary = {
        "learner": type(network).__name__,
        "params": network.get_params(),
        "data": {"meta_train_images": len(x), "meta_val_images": len(vx), "classes": classes,
                 "support_per_class": support_per_class, "data_dir": str(data_dir) if data_dir else "default"},
        "training": {k: v for k, v in network.history_.items() if not isinstance(v, list)},
        "validation": network.history_.get("validation", []),
        "seconds": round(time.monotonic() - start, 1),
        "threads": torch.get_num_threads(),
        "encoder_fingerprint": fingerprint(network),
        "medmeta_version": medmeta.__version__,
        "torch_version": torch.__version__,
    }
    atomic_write(root / TRAINING_FILE, json.dumps(summary, indent=1).encode())
    return summary


def export(bundle: str | Path, memory: SupportMemory, out: str | Path) -> Path:
    """A copy of ``bundle`` whose network remembers the memory's cases instead of the shipped support set.

    The copy's metadata names the memory's classes in ``channel_def`` and records the memory
    version in its version and changelog, so MONAI's tools (and batch jobs) run the classes a
    clinician added, as they stand in that version of the memory.
    """
    bundle, out = Path(bundle), Path(out)
    if out.exists():
        raise DataError("already exists; export into a new folder", source=out)
    x, y, classes = memory.support_set()
    if len(classes) < 2:
        raise DataError(f"the memory holds {len(classes)} class(es); a classifier needs two or more",
                        source=memory.directory)
    network = copy.deepcopy(memory.learner).remember(x, y, classes)
    shutil.copytree(bundle, out, ignore=shutil.ignore_patterns("eval", "*.ts", "sample_images"))
    buffer = io.BytesIO()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in network.state_dict().items()}, buffer)
    atomic_write(out / MODEL_FILE, buffer.getvalue())
    meta = read_metadata(bundle)
    version = f"{meta['version']}+memory{memory.version}"
    pred = meta["network_data_format"]["outputs"]["pred"]
    pred["channel_def"] = {str(i): c for i, c in enumerate(classes)}
    pred["num_channels"] = len(classes)
    meta["version"] = version
    meta["changelog"] = {version: f"support set replaced by version {memory.version} of a support memory "
                                  f"({len(y)} cases of {len(classes)} classes, encoder {memory.encoder})",
                         **meta["changelog"]}
    atomic_write(out / "configs" / "metadata.json", json.dumps(meta, indent=4).encode())
    for name in ("inference.json", "evaluate.json", "train.json"):
        path = out / "configs" / name
        config = json.loads(path.read_text())
        network_def = config.get("network_def", {})
        if "n_classes" in network_def:
            network_def["n_classes"] = len(classes)
        if "n_support" in network_def:
            network_def["n_support"] = len(y)
        atomic_write(path, json.dumps(config, indent=4).encode())
    record = {"support": {"memory_version": memory.version, "encoder": memory.encoder, "cases": len(y),
                          "classes": memory.classes}, "exported_from": str(bundle)}
    atomic_write(out / "models" / "support.json", json.dumps(record, indent=1).encode())
    return out


def evaluate(network: FewShotLearner, output_dir: str | Path, data_dir: str | Path | None = None,
             shots: Sequence[int] = (1, 5, 10), episodes: int = 600, queries: int = 15, seed: int = 0) -> dict:
    """The few-shot protocol (meta-validation and every meta-test set) for a bundle's network.

    Writes ``metrics.json`` in ``output_dir``: mean accuracy over episodes with its 95% CI.
    """
    from medmeta.evaluation import protocol_results

    results = protocol_results({type(network).__name__: network}, data_dir, shots=shots, episodes=episodes,
                               queries=queries, seed=seed)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"results": results, "medmeta_version": medmeta.__version__, "disclaimer": medmeta.DISCLAIMER}
    atomic_write(out / "metrics.json", json.dumps(report, indent=1).encode())
    return report

"""The few-shot imaging protocol: which data meta-train, meta-validate and meta-test the learners.

Meta-train on the train split of BloodMNIST and of six OrganAMNIST classes; meta-validate
on the val split of the same classes; meta-test on data sets never seen in training
(PneumoniaMNIST, BreastMNIST, 2-way) and on five OrganAMNIST classes held out of
meta-training (5-way). The held-out classes were drawn once at random
(``numpy.random.default_rng(0).choice(11, 5)``) and are fixed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medmeta.datasets.medmnist import ImageSet, load_medmnist
from medmeta.imaging import pool
from medmeta.paths import medmnist_file
from medmeta.tasks import ClassSplit

META_TRAIN_SETS = ("bloodmnist", "organamnist")
HELD_OUT_CLASSES = frozenset(
    f"organamnist:{c}" for c in ("femur-right", "heart", "kidney-left", "kidney-right", "lung-left")
)


@dataclass(frozen=True)
class MetaTestSet:
    """One meta-test benchmark: episodes of ``n_way`` classes from one split of one file."""

    name: str
    dataset: str
    n_way: int
    split: str = "test"
    classes: frozenset[str] | None = None  # None: every class of the file


META_TEST_SETS = (
    MetaTestSet("pneumonia", "pneumoniamnist", 2),
    MetaTestSet("breast", "breastmnist", 2),
    MetaTestSet("organa-held-out", "organamnist", 5, classes=HELD_OUT_CLASSES),
)


def _load(dataset: str, split: str, data_dir: str | Path | None) -> ImageSet:
    return load_medmnist(medmnist_file(dataset, data_dir), split)


def class_split(data_dir: str | Path | None = None) -> ClassSplit:
    """Meta-train classes and meta-test classes; no class is in both."""
    keys = {k for name in META_TRAIN_SETS for k in _load(name, "train", data_dir).class_keys}
    return ClassSplit(train=frozenset(keys - HELD_OUT_CLASSES), test=HELD_OUT_CLASSES)


def meta_train_pool(split: str = "train", channels: int = 3, size: int = 28,
                    data_dir: str | Path | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Images and class keys of the meta-training classes (``split="val"`` for meta-validation)."""
    sets = [_load(name, split, data_dir) for name in META_TRAIN_SETS]
    return pool(sets, channels, size, classes=set(class_split(data_dir).train))


def meta_test_pool(bench: MetaTestSet, channels: int = 3, size: int = 28,
                   data_dir: str | Path | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Images and class keys of one meta-test benchmark."""
    return pool([_load(bench.dataset, bench.split, data_dir)], channels, size,
                classes=set(bench.classes) if bench.classes else None)

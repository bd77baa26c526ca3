"""MedMNIST-layout ``.npz`` files: ``{split}_images`` (uint8, grey or colour) and ``{split}_labels``."""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmeta.errors import DataError

SPLITS = ("train", "val", "test")

#: Class names of the MedMNIST v2 2-D data sets (Yang et al., Scientific Data 2023), by label index.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "pathmnist": (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
        "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium",
    ),
    "dermamnist": (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
        "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
        "vascular lesions",
    ),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("0", "1", "2", "3", "4"),
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": (
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
        "lymphocyte", "monocyte", "neutrophil", "platelet",
    ),
    "tissuemnist": (
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
        "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes", "Podocytes",
        "Proximal Tubule Segments", "Thick Ascending Limb",
    ),
    **{
        name: (
            "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
            "liver", "lung-left", "lung-right", "pancreas", "spleen",
        )
        for name in ("organamnist", "organcmnist", "organsmnist")
    },
}


@dataclass(frozen=True)
class ImageSet:
    """The labelled images of one split of one data set."""

    images: np.ndarray  # uint8, (N, H, W) grey or (N, H, W, C) colour
    labels: np.ndarray  # int64, (N,)
    class_names: tuple[str, ...]
    name: str
    split: str
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_channels(self) -> int:
        return 1 if self.images.ndim == 3 else self.images.shape[-1]

    @property
    def class_keys(self) -> tuple[str, ...]:
        """Globally unique class names, ``"<data set>:<class>"``, by label index."""
        return tuple(f"{self.name}:{c}" for c in self.class_names)

    def item_keys(self) -> np.ndarray:
        """The global class key of every image."""
        return np.asarray(self.class_keys, dtype=object)[self.labels]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return dict(zip(self.class_names, counts.tolist(), strict=True))

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.class_names, self.name, self.split,
                        self.source)


def dataset_name(path: str | Path) -> str:
    """``bloodmnist_64.npz`` -> ``bloodmnist`` (MedMNIST+ files carry their size as a suffix)."""
    return re.sub(r"_\d+$", "", Path(path).stem.lower())


def load_medmnist(path: str | Path, split: str = "train", class_names: tuple[str, ...] | None = None
                  ) -> ImageSet:
    """Read one split of a MedMNIST-layout ``.npz`` file.

    Class names come from ``class_names``, else from the file's data set name, else
    ``"class 0"``, ``"class 1"``, ... from the labels present.
    """
    path = Path(path)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}", source=path)
    if not path.is_file():
        raise DataError("file not found", source=path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            for key in (f"{split}_images", f"{split}_labels"):
                if key not in keys:
                    raise DataError(f"missing; the file has {sorted(keys)}", source=path, field=key)
            images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"not a readable .npz file ({exc})", source=path) from exc

    field = f"{split}_images"
    if images.dtype != np.uint8:
        raise DataError(f"expected uint8 pixels, found {images.dtype}", source=path, field=field)
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3))):
        raise DataError(f"expected shape (N, H, W) or (N, H, W, 1|3), found {images.shape}",
                        source=path, field=field)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]

    field = f"{split}_labels"
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise DataError(f"multi-label data ({labels.shape[1]} labels per image) is not supported",
                        source=path, field=field)
    labels = labels.reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"expected integer labels, found {labels.dtype}", source=path, field=field)
    if len(labels) != len(images):
        raise DataError(f"{len(labels)} labels for {len(images)} images", source=path, field=field)
    labels = labels.astype(np.int64)

    name = dataset_name(path)
    if class_names is None:
        known = CLASS_NAMES.get(name)
        n = int(labels.max()) + 1 if len(labels) else 0
        class_names = known if known and len(known) >= n else tuple(f"class {i}" for i in range(n))
    bad = np.flatnonzero((labels < 0) | (labels >= len(class_names)))
    if len(bad):
        raise DataError(f"label {labels[bad[0]]} outside 0..{len(class_names) - 1}", source=path,
                        field=field, record_id=f"item {int(bad[0])}")
    return ImageSet(images, labels, tuple(class_names), name, split, str(path))

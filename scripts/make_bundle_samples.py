"""Write the sample PNGs of the few-shot bundles: one test image of each meta-training class.

    .venv/bin/python scripts/make_bundle_samples.py --data-dir ../shared/data

The images are MedMNIST v2 test images (CC BY 4.0); the bundles' default inference runs on them.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from PIL import Image

from medmeta.datasets.medmnist import load_medmnist
from medmeta.paths import medmnist_file
from medmeta.protocol import META_TRAIN_SETS, class_split

BUNDLES = Path(__file__).resolve().parents[1] / "monai_bundles"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    train_classes = class_split(args.data_dir).train
    rng = np.random.default_rng(0)
    for name in META_TRAIN_SETS:
        test = load_medmnist(medmnist_file(name, args.data_dir), "test")
        for label, key in enumerate(test.class_keys):
            if key not in train_classes:
                continue
            i = int(rng.choice(np.flatnonzero(test.labels == label)))
            short = re.sub(r"[^a-z0-9]+", "-", test.class_names[label].lower()).strip("-")[:24]
            for bundle in sorted(BUNDLES.glob("*_classification")):
                out = bundle / "sample_images" / f"{name}_test{i:05d}_{short}.png"
                out.parent.mkdir(exist_ok=True)
                Image.fromarray(test.images[i]).save(out)


if __name__ == "__main__":
    main()

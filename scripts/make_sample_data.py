"""Rebuild ``sample_data/`` from a full copy of the data (the layout of ``shared/data``).

    python scripts/make_sample_data.py --source ../shared/data

Deterministic: the same source gives byte-identical samples. DATA.md records what was taken.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

#: images per class kept from each split: (train, val, test)
MEDMNIST = {
    "bloodmnist": (60, 20, 20),
    "organamnist": (60, 20, 40),
    "pneumoniamnist": (20, 20, 60),
    "breastmnist": (20, 20, 40),
}
SYNTHEA = (  # 8 with diabetes and an HbA1c history, 4 without diabetes with HbA1c, 2 without HbA1c
    "Renato_Dare", "Morris_Lockman", "Emery_Purdy", "Estrella_Daugherty", "Leonor_Trujillo",
    "Leonel_Hand", "Silvana_Cremin", "Nikki_Ferry", "Lupe_Little", "Floyd_Connelly", "Alfreda_Wyman",
    "Matt_Mosciski", "Alberto_Atencio", "Antonio_Castellanos",
)
WARFARIN_ROWS = 500
CGM_SUBJECTS = 6  # the first three "diabetic" and three "pre-diabetic" subjects of the Hall data


def sample_medmnist(src: Path, dst: Path) -> None:
    rng = np.random.default_rng(0)
    for name, per_split in MEDMNIST.items():
        arrays = {}
        with np.load(src / f"{name}.npz") as npz:
            for split, per_class in zip(("train", "val", "test"), per_split, strict=True):
                labels = npz[f"{split}_labels"].reshape(-1)
                keep = np.sort(np.concatenate([
                    rng.choice(np.flatnonzero(labels == c), min(per_class, int((labels == c).sum())), replace=False)
                    for c in np.unique(labels)
                ]))
                arrays[f"{split}_images"] = npz[f"{split}_images"][keep]
                arrays[f"{split}_labels"] = npz[f"{split}_labels"][keep]
        np.savez_compressed(dst / f"{name}.npz", **arrays)


def sample_warfarin(src: Path, dst: Path) -> None:
    with src.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if any(c.strip() for c in r)]
    keep = np.sort(np.random.default_rng(0).choice(len(body), WARFARIN_ROWS, replace=False))
    with dst.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body[i] for i in keep)


def sample_cgm(src: Path, dst: Path) -> None:
    frame = pd.read_csv(src, dtype=str, keep_default_na=False)
    first = frame.drop_duplicates("id")
    subjects = [*first[first.diagnosis == "diabetic"].id[:3], *first[first.diagnosis == "pre-diabetic"].id[:3]]
    assert len(subjects) == CGM_SUBJECTS
    frame[frame.id.isin(subjects)].to_csv(dst, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "sample_data")
    args = parser.parse_args()
    src, out = args.source, args.out

    for sub in ("medmnist", "synthea_fhir_r4/bundles", "iwpc_warfarin", "cgm_iglu"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    sample_medmnist(src / "medmnist", out / "medmnist")
    for stem in SYNTHEA:
        (match,) = sorted((src / "synthea_fhir_r4/bundles").glob(f"{stem}_*.json.gz"))
        shutil.copy2(match, out / "synthea_fhir_r4/bundles" / match.name)
    for folder in ("fhir_bulk_ndjson_10_patients", "fhir_genomics_examples"):
        shutil.copytree(src / folder, out / folder, dirs_exist_ok=True)
    sample_warfarin(src / "iwpc_warfarin/warfarin.csv", out / "iwpc_warfarin/warfarin.csv")
    sample_cgm(src / "cgm_iglu/example_data_hall.csv", out / "cgm_iglu/example_data_hall.csv")
    shutil.copy2(src / "cgm_iglu/example_meals_hall.csv", out / "cgm_iglu/example_meals_hall.csv")

    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "__init__.py"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"| `{path.relative_to(out)}` | {path.stat().st_size} | `{digest[:16]}` |")


if __name__ == "__main__":
    main()

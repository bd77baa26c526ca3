"""Where medmeta finds data: the embedded samples, or a full copy in the layout of ``shared/data``.

Precedence: an explicit ``data_dir`` argument (the CLI's ``--data-dir``), then the
``MEDMETA_DATA`` environment variable, then the samples shipped inside the package.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from medmeta.errors import DataError

ENV_VAR = "MEDMETA_DATA"

#: Relative paths of the data sets, the same in the samples and in ``shared/data``.
MEDMNIST = "medmnist"
SYNTHEA_BUNDLES = "synthea_fhir_r4/bundles"
BULK_EXPORT = "fhir_bulk_ndjson_10_patients"
GENOMICS_EXAMPLES = "fhir_genomics_examples"
WARFARIN_CSV = "iwpc_warfarin/warfarin.csv"
CGM_HALL_CSV = "cgm_iglu/example_data_hall.csv"


def sample_data_dir() -> Path:
    """The small samples of every data set that ship with medmeta."""
    return Path(str(files("medmeta.sample_data")))


def data_dir(override: str | Path | None = None) -> Path:
    """The data root in use (see the module docstring for the precedence)."""
    chosen = override or os.environ.get(ENV_VAR)
    if not chosen:
        return sample_data_dir()
    root = Path(chosen).expanduser()
    if not root.is_dir():
        origin = "--data-dir" if override else ENV_VAR
        raise DataError(f"data directory does not exist (set by {origin})", source=root)
    return root


def data_path(relative: str, override: str | Path | None = None) -> Path:
    """A file or folder under the data root; a clear error if it is missing."""
    root = data_dir(override)
    path = root / relative
    if not path.exists():
        raise DataError(f"not found under the data root {root}", source=path)
    return path


def medmnist_file(name: str, override: str | Path | None = None) -> Path:
    """``bloodmnist`` -> the path of ``medmnist/bloodmnist.npz`` under the data root."""
    return data_path(f"{MEDMNIST}/{name}.npz", override)

"""The trained models shipped with medmeta, one folder each (config.json, model.safetensors, README.md)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from medmeta.errors import DataError


def model_dir(name: str) -> Path:
    """The folder of a shipped model (``"warfarin"``, ``"glucose"``)."""
    path = Path(str(files("medmeta.models"))) / name
    if not (path / "config.json").is_file():
        raise DataError(f"no shipped model {name!r} (its config.json is missing)", source=path)
    return path

"""Who the clients are: real partitions of the data, each read only by its own client.

- CGM (``cgm``): one client per subject, the patient's own device (subjects in id order);
- warfarin (``warfarin``): one client per patient group, standing in for a hospital: by ``race`` (the IWPC
  race categories) or by ``indication`` (afib, valve, vte, other, unknown), largest group first.

A Flower node that points at its own file (``data-path`` in its node config) and names no partition
holds all of that file: a hospital with its own patients, or a clinic with several patients' devices.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pandas as pd

from medmeta.errors import DataError


def _dosed(frame: pd.DataFrame) -> pd.DataFrame:
    dose = pd.to_numeric(frame["dose_mg_week"], errors="coerce")
    return frame[dose > 0].reset_index(drop=True)


@functools.lru_cache(maxsize=4)
def _partitions(task: str, path: str, by: str, mtime: float) -> tuple[tuple[str, Any], ...]:
    """Every partition of a file as ``(name, data)``, in client order (cached per process: a simulated client
    process serves several clients, round after round)."""
    if task == "cgm":
        from medmeta.datasets.cgm import load_cgm

        series, _ = load_cgm(path)
        return tuple((sid, [series[sid]]) for sid in sorted(series))
    from medmeta.datasets.warfarin import load_iwpc
    from medmeta.treatment.iwpc import race_category
    from medmeta.treatment.warfarin_features import indication_group

    frame, _ = load_iwpc(path)
    dosed = _dosed(frame)
    label = race_category(dosed) if by == "race" else indication_group(dosed)
    sizes = label.value_counts()
    order = sorted(sizes.index, key=lambda g: (-sizes[g], g))
    return tuple((g, dosed[label == g].reset_index(drop=True)) for g in order)


def partitions(task: str, path: str | Path, by: str) -> list[tuple[str, Any]]:
    """``(name, data)`` of every partition of ``path`` in client order: CGM subjects as a list of one
    :class:`~medmeta.datasets.cgm.CGMSeries`, warfarin groups as a frame of their dosed patients."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", source=path)
    return list(_partitions(task, str(path.resolve()), by, path.stat().st_mtime))


def client_data(task: str, path: str | Path, by: str, partition: int | None = None) -> Any:
    """The data of one client: partition number ``partition`` of ``path``, or all of it when ``None``."""
    parts = partitions(task, path, by)
    if partition is None:
        if task == "cgm":
            return [s for _, data in parts for s in data]
        return pd.concat([data for _, data in parts], ignore_index=True) if parts else pd.DataFrame()
    if not 0 <= partition < len(parts):
        raise DataError(f"client {partition} does not exist: the file has {len(parts)} {task} partitions "
                        f"by {by}", source=path)
    return parts[partition][1]

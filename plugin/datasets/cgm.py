"""Continuous glucose monitoring (CGM) CSV files in the iglu layout: ``id,time,gl`` (mg/dL).

:func:`load_cgm` returns one :class:`CGMSeries` per subject: readings sorted in time, in
mg/dL, with the sampling interval and the gaps between readings made explicit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medmeta.datasets import Loaded
from medmeta.errors import DataError, Rejection

#: mg/dL per unit (glucose 180.156 g/mol: 1 mmol/L = 18.0156 mg/dL).
UNITS = {"mg/dL": 1.0, "mmol/L": 18.0156}
#: Readings outside this range (mg/dL) are rejected as implausible; sensors report about 40-400.
PLAUSIBLE_MGDL = (10.0, 1000.0)


@dataclass(frozen=True)
class CGMSeries:
    """One subject's readings: ``time`` ascending and unique, ``glucose`` in mg/dL."""

    subject_id: str
    time: pd.DatetimeIndex
    glucose: np.ndarray
    attributes: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.glucose)

    @property
    def interval(self) -> pd.Timedelta:
        """The typical (median) time between readings."""
        if len(self.time) < 2:
            return pd.Timedelta(minutes=5)
        return pd.Timedelta(np.median(np.diff(self.time.to_numpy())))

    def gaps(self, factor: float = 1.5) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """Spans between consecutive readings longer than ``factor`` sampling intervals."""
        if len(self.time) < 2:
            return []
        steps = np.diff(self.time.to_numpy())
        idx = np.flatnonzero(steps > factor * self.interval.to_timedelta64())
        return [(self.time[i], self.time[i + 1]) for i in idx]

    def regular(self, interval: pd.Timedelta | None = None) -> pd.Series:
        """Readings on a regular grid from the first reading; points with none within half a step are NaN."""
        step = interval or self.interval
        grid = pd.date_range(self.time[0], self.time[-1], freq=step)
        observed = pd.Series(self.glucose, index=self.time)
        aligned = observed.reindex(grid, method="nearest", tolerance=step / 2)
        return aligned.rename("glucose_mgdl")


def load_cgm(
    path: str | Path,
    *,
    unit: str = "mg/dL",
    id_column: str = "id",
    time_column: str = "time",
    glucose_column: str = "gl",
    strict: bool = False,
) -> Loaded[dict[str, CGMSeries]]:
    """Read a CGM CSV into per-subject series.

    Glucose is converted to mg/dL from ``unit``, or from a ``unit`` column when the file has
    one. Rows with a missing id, an unreadable time, a missing, non-numeric or implausible
    glucose value, an unknown unit, or a second reading at the same time are rejected.
    Constant per-subject text columns (such as ``diagnosis``) are kept as attributes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", source=path)
    if unit not in UNITS:
        raise DataError(f"unknown glucose unit {unit!r}; expected one of {sorted(UNITS)}", source=path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"not a readable CSV file ({exc})", source=path) from exc
    for column in (id_column, time_column, glucose_column):
        if column not in raw.columns:
            raise DataError(f"missing column; the file has {list(raw.columns)}", source=path, field=column, row=1)

    ids = raw[id_column].str.strip()
    times = pd.to_datetime(raw[time_column].str.strip(), errors="coerce", format="ISO8601")
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    values = pd.to_numeric(raw[glucose_column].str.strip().replace({"NA": ""}), errors="coerce")
    unit_column = next((c for c in ("unit", "units") if c in raw.columns), None)
    units = raw[unit_column].str.strip() if unit_column else pd.Series(unit, index=raw.index)
    factor = units.map(UNITS)
    glucose = values * factor

    checks = [
        (id_column, ids == "", "missing subject id"),
        (time_column, times.isna(), "not a date-time"),
        (glucose_column, values.isna(), "missing or not a number"),
        (unit_column or "unit", factor.isna(), f"unknown unit; expected one of {sorted(UNITS)}"),
        (glucose_column, ~glucose.between(*PLAUSIBLE_MGDL) & glucose.notna(),
         f"implausible glucose (outside {PLAUSIBLE_MGDL[0]:g}-{PLAUSIBLE_MGDL[1]:g} mg/dL)"),
    ]
    bad = pd.Series(False, index=raw.index)
    rejected: list[Rejection] = []
    for column, mask, reason in checks:
        new = mask & ~bad
        for i in np.flatnonzero(new.to_numpy()):
            shown = raw.at[raw.index[i], column] if column in raw.columns else ""
            rejected.append(Rejection(str(path), f"{reason} ({shown!r})", row=int(i) + 2, field=column,
                                      record_id=ids.iloc[i] or None))
        bad |= mask
    duplicate = ~bad & pd.DataFrame({"id": ids, "t": times}).duplicated()
    for i in np.flatnonzero(duplicate.to_numpy()):
        rejected.append(Rejection(str(path), "second reading at the same time", row=int(i) + 2,
                                  field=time_column, record_id=ids.iloc[i]))
    bad |= duplicate
    rejected.sort(key=lambda r: r.row or 0)
    if strict and rejected:
        raise DataError.from_rejection(rejected[0])

    extra = [c for c in raw.columns if c not in (id_column, time_column, glucose_column, unit_column)]
    good = pd.DataFrame({"id": ids, "time": times, "glucose": glucose})[~bad]
    series: dict[str, CGMSeries] = {}
    for subject, rows in good.groupby("id", sort=False):
        rows = rows.sort_values("time")
        attributes = {c: raw.loc[rows.index, c].iloc[0] for c in extra if raw.loc[rows.index, c].nunique() == 1}
        series[str(subject)] = CGMSeries(str(subject), pd.DatetimeIndex(rows["time"]),
                                         rows["glucose"].to_numpy(dtype=float), attributes)
    return Loaded(series, rejected)

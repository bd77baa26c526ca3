"""Errors and rejections that name the file, row, record and field they concern."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rejection:
    """An input record that was not used, and why.

    ``row`` is the 1-based line number in ``source`` (the header of a CSV is line 1).
    """

    source: str
    reason: str
    row: int | None = None
    field: str | None = None
    record_id: str | None = None

    def __str__(self) -> str:
        where = [Path(self.source).name]
        if self.row is not None:
            where.append(f"line {self.row}")
        if self.record_id:
            where.append(f"record {self.record_id}")
        if self.field:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.reason}"

    def to_dict(self) -> dict:
        return asdict(self)


REJECT_COLUMNS = ("source", "row", "record_id", "field", "reason")


def write_rejects(path: str | Path, rejections: Iterable[Rejection]) -> Path:
    """Write rejections as CSV (``source,row,record_id,field,reason``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(REJECT_COLUMNS)
        w.writerows([r.source, r.row, r.record_id, r.field, r.reason] for r in rejections)
    return path


class MedmetaError(Exception):
    """Base class of medmeta's own errors."""


class DataError(MedmetaError, ValueError):
    """Input that cannot be used: the message names the file, line, record and field."""

    def __init__(
        self,
        reason: str,
        *,
        source: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
        record_id: str | None = None,
    ) -> None:
        self.rejection = Rejection(str(source or "<input>"), reason, row, field, record_id)
        super().__init__(str(self.rejection))

    @classmethod
    def from_rejection(cls, rejection: Rejection) -> DataError:
        r = rejection
        return cls(r.reason, source=r.source, row=r.row, field=r.field, record_id=r.record_id)

"""Route the lines of Bulk NDJSON files to partitions by patient, so each partition holds whole patients.

Each input file is shuffled on its own (a Dask task per file) into one spill file per
partition; the folder of spill files is renamed into place when complete, so a shuffle that
was killed half-way is simply done again.
"""

from __future__ import annotations

import gzip
import os
import shutil
import zlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from medmeta.fhir.sources import Entry, iter_file

#: Elements that name the patient a resource belongs to, by resource type (``subject`` otherwise).
_PATIENT_ELEMENT = {"AllergyIntolerance": "patient", "Immunization": "patient", "Claim": "patient",
                    "ExplanationOfBenefit": "patient", "Device": "patient", "Coverage": "beneficiary",
                    "Account": "subject"}


#: Bytes of routed lines a shuffle task holds before appending them to the spill files.
SPILL_BUFFER = 32 * 2**20


def patient_key(resource: dict[str, Any] | None) -> str | None:
    """The id of the patient a resource belongs to, or None (organisations, practitioners, ...)."""
    if not isinstance(resource, dict):
        return None
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    ref = resource.get(_PATIENT_ELEMENT.get(rtype, "subject"))
    if isinstance(ref, list):
        ref = ref[0] if ref else None
    text = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(text, str):
        return None
    parts = text.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return parts[-1] if len(parts) >= 2 and parts[-2] == "Patient" else None


def routing_key(entry: Entry) -> str:
    """What decides an entry's partition: its patient, else its own identity.

    Resources of no patient (organisations, practitioners, unreadable lines) are spread over the
    partitions like patients are, so no partition grows with the size of the export.
    """
    key = patient_key(entry.resource)
    if key is not None:
        return key
    r = entry.resource
    if isinstance(r, dict) and isinstance(r.get("id"), str):
        return f"{r.get('resourceType')}/{r['id']}"
    return f"{entry.source}:{entry.row}"


def partition_of(key: str, partitions: int) -> int:
    """A key's partition: stable across processes and machines (CRC-32, not Python's salted hash)."""
    return zlib.crc32(key.encode()) % partitions


def spill_dir(workdir: Path, file_index: int) -> Path:
    return workdir / "shuffle" / f"file-{file_index:05d}"


def shuffle_file(path: str, file_index: int, partitions: int, workdir: Path) -> Path:
    """Split one NDJSON file into ``part-NNNNN.ndjson.gz`` spill files; skip if already done.

    Routed lines are held up to ``SPILL_BUFFER`` bytes, then appended to their spill files as one
    more gzip member each, so memory and open files stay bounded however many partitions there are.
    """
    final = spill_dir(workdir, file_index)
    if final.is_dir():
        return final
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    held: dict[int, list[bytes]] = defaultdict(list)
    size = 0
    for entry in iter_file(Path(path)):
        line = orjson.dumps({"source": entry.source, "row": entry.row, "error": entry.error,
                             "resource": entry.resource}) + b"\n"
        held[partition_of(routing_key(entry), partitions)].append(line)
        size += len(line)
        if size >= SPILL_BUFFER:
            _append(held, tmp)
            size = 0
    _append(held, tmp)
    tmp.rename(final)
    return final


def _append(held: dict[int, list[bytes]], folder: Path) -> None:
    """Append each partition's held lines to its spill file (a gzip member; readers see one stream)."""
    for p, lines in held.items():
        with (folder / f"part-{p:05d}.ndjson.gz").open("ab") as f:
            f.write(gzip.compress(b"".join(lines), compresslevel=1, mtime=0))
    held.clear()


def spilled_entries(workdir: Path, file_indices: tuple[int, ...], partition: int) -> Iterator[Entry]:
    """The entries of ``partition`` from every shuffled file, in input-file order."""
    for i in file_indices:
        path = spill_dir(workdir, i) / f"part-{partition:05d}.ndjson.gz"
        if not path.exists():
            continue
        with gzip.open(path, "rb") as f:
            for line in f:
                d = orjson.loads(line)
                yield Entry(d["resource"], d["source"], d["row"], d["error"])

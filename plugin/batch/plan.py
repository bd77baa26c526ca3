"""The plan of a batch run: its input files (with checksums), partitions and start time.

The plan is written once to ``<output>/.work/plan.json``; a restarted run with the same
arguments finds it and resumes, and a run with other arguments is refused rather than
mixing two runs in one output folder.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from medmeta.errors import MedmetaError
from medmeta.fhir.sources import list_files

#: Default partition size: about this many bytes of (compressed or not) input per partition.
BYTES_PER_PARTITION = 4 * 2**20


@dataclass(frozen=True)
class InputFile:
    path: str
    kind: str  # "bundle" (one or more patients per file) or "ndjson" (one resource type per file)
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Plan:
    source: str
    files: tuple[InputFile, ...]
    skipped: tuple[tuple[str, str], ...]
    partitions: int
    run_time: str
    models: tuple[str, ...] = field(default=())

    @property
    def ndjson(self) -> tuple[int, ...]:
        """Indices of the NDJSON files (shuffled by patient before scoring)."""
        return tuple(i for i, f in enumerate(self.files) if f.kind == "ndjson")

    def bundle_files(self, partition: int) -> list[InputFile]:
        """The Bundle files scored in ``partition`` (every ``partitions``-th one)."""
        bundles = [f for f in self.files if f.kind == "bundle"]
        return bundles[partition::self.partitions]

    def key(self) -> dict:
        """What must match for a run to resume this plan (everything but the start time)."""
        d = asdict(self)
        d.pop("run_time")
        return d

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Plan:
        d = orjson.loads(path.read_bytes())
        return cls(d["source"], tuple(InputFile(**f) for f in d["files"]), tuple(map(tuple, d["skipped"])),
                   d["partitions"], d["run_time"], tuple(d["models"]))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(2**20):
            h.update(chunk)
    return h.hexdigest()


def make_plan(source: str | Path, *, partitions: int | None = None, models: tuple[str, ...] = (),
              run_time: str | None = None) -> Plan:
    """List and checksum the input files and choose the number of partitions."""
    found = list_files(source)
    files = []
    for p in found.files:
        kind = "ndjson" if ".ndjson" in p.name.lower() else "bundle"
        files.append(InputFile(str(p.resolve()), kind, p.stat().st_size, sha256(p)))
    if not files:
        raise MedmetaError(f"{source}: no FHIR Bundle or NDJSON files found")
    n = partitions or max(1, math.ceil(sum(f.bytes for f in files) / BYTES_PER_PARTITION))
    n = min(n, 4096)
    return Plan(str(source), tuple(files), tuple(found.skipped), n,
                run_time or datetime.now(UTC).isoformat(timespec="seconds"), tuple(models))


def resume_or_save(plan: Plan, path: Path) -> Plan:
    """The plan already at ``path`` if it is the same run (keeping its start time), else ``plan`` saved there."""
    if path.exists():
        old = Plan.load(path)
        if old.key() != plan.key():
            raise MedmetaError(f"{path.parent.parent} holds another run (different input files, checksums, "
                               "partitions or models); choose a new --output folder")
        return old
    plan.save(path)
    return plan

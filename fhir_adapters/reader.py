"""Read any FHIR source into the normalised tables: ``read(source) -> FhirTables``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson

from medmeta.errors import write_rejects
from medmeta.fhir.normalise import FhirTables, Normaliser
from medmeta.fhir.sources import Entry, iter_entries, list_files


def read_entries(entries: Iterable[Entry], skipped_files: list[tuple[str, str]] | None = None) -> FhirTables:
    """Normalise a stream of entries (from files, a server, or anything else)."""
    norm = Normaliser()
    norm.counts.skipped_files = list(skipped_files or [])
    for entry in entries:
        norm.add(entry)
    return norm.finish()


def read(source: str | Path, *, token: str | None = None, bulk: bool = False,
         export_to: str | Path | None = None) -> FhirTables:
    """Read a Bundle file, a folder of Bundles or Bulk Data NDJSON, or a FHIR server URL.

    For a server (``http://`` or ``https://``), resources are fetched by search with paging, or
    with ``bulk=True`` through the Bulk Data ``$export`` flow (its files kept in ``export_to`` when
    given, so that rejects point to files that exist); ``token`` is sent as a bearer token.
    """
    text = str(source)
    if text.startswith(("http://", "https://")):
        from medmeta.fhir.client import FhirClient

        with FhirClient(text, token=token) as client:
            return client.read(bulk=bulk, out=export_to)
    files = list_files(source)
    return read_entries(iter_entries(files.files), files.skipped)


def write_tables(tables: FhirTables, out: str | Path) -> dict[str, Path]:
    """Write the tables (CSV), ``rejects.csv``, ``unmapped.csv`` and ``counts.json`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in FhirTables.TABLES:
        paths[name] = out / f"{name}.csv"
        getattr(tables, name).to_csv(paths[name], index=False)
    paths["rejects"] = write_rejects(out / "rejects.csv", tables.rejected)
    paths["unmapped"] = out / "unmapped.csv"
    tables.unmapped.to_csv(paths["unmapped"], index=False)
    paths["counts"] = out / "counts.json"
    paths["counts"].write_bytes(orjson.dumps(tables.counts.to_dict(), option=orjson.OPT_INDENT_2))
    return paths

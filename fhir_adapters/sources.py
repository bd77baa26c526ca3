"""Where FHIR resources come from: Bundle files, Bulk Data NDJSON folders, or a FHIR server.

:func:`iter_entries` streams every resource of a source as an :class:`Entry` with the file
and line (NDJSON) or entry number (Bundle) it came from; input that cannot be parsed comes
out as an entry with an ``error`` instead, so that nothing is lost. Only one Bundle file or
one NDJSON line is in memory at a time.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class

from medmeta.errors import DataError


@dataclass
class Entry:
    """One resource read from a source (or the reason it could not be read)."""

    resource: dict[str, Any] | None
    source: str
    row: int | None
    error: str | None = None
    #: Bundle ``fullUrl`` -> ``Type/id`` of its entries, to resolve ``urn:uuid:`` references.
    urls: dict[str, str] = field(default_factory=dict)


@dataclass
class SourceFiles:
    """The files of a local source, and the files it skipped (with why)."""

    files: list[Path]
    skipped: list[tuple[str, str]]


@lru_cache(maxsize=512)
def is_resource_type(name: str) -> bool:
    """Whether ``name`` is a FHIR R4 resource type."""
    try:
        get_fhir_model_class(name)
    except (KeyError, ValueError, AttributeError, ImportError):
        return False
    return True


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    for ext, kind in ((".ndjson.gz", "ndjson"), (".ndjson", "ndjson"), (".json.gz", "json"), (".json", "json")):
        if name.endswith(ext):
            return kind
    return None


def _bulk_manifest(path: Path) -> dict | None:
    try:
        with _open(path) as f:
            doc = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return None
    if isinstance(doc, dict) and isinstance(doc.get("output"), list) and "transactionTime" in doc:
        return doc
    return None


def _first_resource_type(path: Path) -> str | None:
    """The ``resourceType`` of the first record of an NDJSON file (None if it has none)."""
    try:
        with _open(path) as f:
            for line in f:
                if line.strip():
                    doc = orjson.loads(line)
                    return doc.get("resourceType") if isinstance(doc, dict) else None
    except (OSError, EOFError, orjson.JSONDecodeError):
        return None
    return None


def list_files(path: str | Path) -> SourceFiles:
    """The Bundle and NDJSON files of a file or folder.

    In a folder with a Bulk Data manifest (``manifest.json`` with ``output``), the files it lists
    as ``output`` and as ``error`` (the server's OperationOutcomes, reported as rejects); other
    files there are skipped. Otherwise every ``*.json[.gz]`` Bundle below it, and every
    ``*.ndjson[.gz]`` file that is named after a resource type or whose first line is a FHIR
    resource. Skipped files are returned with the reason.
    """
    path = Path(path)
    if path.is_file():
        if _kind(path) is None:
            raise DataError("not a FHIR file (.json, .json.gz, .ndjson or .ndjson.gz)", source=path)
        return SourceFiles([path], [])
    if not path.is_dir():
        raise DataError("no such file or folder", source=path)
    manifest_path = path / "manifest.json"
    manifest = _bulk_manifest(manifest_path) if manifest_path.is_file() else None
    if manifest is not None:
        files = []
        for item in [*manifest["output"], *(manifest.get("error") or [])]:
            local = path / Path(str(item.get("url", ""))).name
            if local.is_file():
                files.append(local)
            else:
                raise DataError(f"file listed in the manifest is missing: {local.name}", source=manifest_path)
        listed = {*files, manifest_path}
        skipped = [(str(manifest_path), "Bulk Data manifest")] + [
            (str(p), "not listed in the Bulk Data manifest")
            for p in sorted(q for q in path.rglob("*") if q.is_file() and q not in listed)]
        return SourceFiles(files, skipped)
    files, skipped = [], []
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        kind = _kind(p)
        bundle = kind == "json" and p.name != "manifest.json"
        if bundle or (kind == "ndjson" and (is_resource_type(p.name.split(".")[0])
                                            or is_resource_type(str(_first_resource_type(p))))):
            files.append(p)
        else:
            skipped.append((str(p), "not a Bundle, nor NDJSON of FHIR resources"))
    return SourceFiles(files, skipped)


def _bundle_entries(doc: Any, source: str) -> Iterator[Entry]:
    if not isinstance(doc, dict):
        yield Entry(None, source, None, "not a JSON object")
        return
    if doc.get("resourceType") != "Bundle":
        yield Entry(doc, source, 1)  # a single resource in its own file
        return
    entries = doc.get("entry") or []
    if not isinstance(entries, list):
        yield Entry(None, source, None, "Bundle.entry is not a list")
        return
    urls: dict[str, str] = {}
    for e in entries:
        r = e.get("resource") if isinstance(e, dict) else None
        if isinstance(r, dict) and isinstance(e.get("fullUrl"), str) and isinstance(r.get("id"), str):
            urls[e["fullUrl"]] = f"{r.get('resourceType')}/{r['id']}"
    for i, e in enumerate(entries, start=1):
        r = e.get("resource") if isinstance(e, dict) else None
        if not isinstance(r, dict):
            yield Entry(None, source, i, "Bundle entry without a resource object")
            continue
        if "id" not in r and isinstance(e.get("fullUrl"), str) and e["fullUrl"].startswith("urn:uuid:"):
            r = {**r, "id": e["fullUrl"][9:]}
            urls[e["fullUrl"]] = f"{r.get('resourceType')}/{r['id']}"
        yield Entry(r, source, i, urls=urls)


def outcome_summary(outcome: dict[str, Any]) -> str:
    """The issues of an OperationOutcome in one line."""
    issues = outcome.get("issue") if isinstance(outcome.get("issue"), list) else []
    texts = [f"{i.get('severity', '?')} {i.get('code', '?')}: "
             f"{i.get('diagnostics') or (i.get('details') or {}).get('text', '')}"
             for i in issues if isinstance(i, dict)]
    return "; ".join(texts) or "an OperationOutcome without issues"


def iter_file(path: Path) -> Iterator[Entry]:
    """The entries of one Bundle (``.json[.gz]``) or NDJSON (``.ndjson[.gz]``) file."""
    source = str(path)
    try:
        with _open(path) as f:
            if _kind(path) == "ndjson":
                for i, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        doc = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        yield Entry(None, source, i, f"malformed JSON: {exc}")
                        continue
                    if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome":
                        # a Bulk Data error file: what the server could not export
                        yield Entry(None, source, i, f"the server reported: {outcome_summary(doc)}")
                    elif isinstance(doc, dict):
                        yield Entry(doc, source, i)
                    else:
                        yield Entry(None, source, i, "line is not a JSON object")
            else:
                try:
                    doc = orjson.loads(f.read())
                except orjson.JSONDecodeError as exc:
                    yield Entry(None, source, None, f"malformed JSON: {exc}")
                    return
                yield from _bundle_entries(doc, source)
    except (OSError, EOFError) as exc:  # unreadable or truncated gzip
        yield Entry(None, source, None, f"cannot read file: {exc}")


def iter_entries(files: list[Path]) -> Iterator[Entry]:
    """Every entry of every file, in order."""
    for path in files:
        yield from iter_file(path)


def bundle_entries(doc: Any, source: str) -> Iterator[Entry]:
    """The entries of a Bundle already parsed (a server's search page)."""
    yield from _bundle_entries(doc, source)

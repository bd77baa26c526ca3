"""Write FHIR resources: validated with ``fhir.resources`` R4B, as Bulk NDJSON per type or transaction Bundles.

Every resource is validated with the full R4B model before it is written or posted; an invalid
one raises :class:`~medmeta.errors.DataError` naming the resource and the element.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from medmeta.errors import DataError
from medmeta.fhir.http import FHIR_JSON, FhirServerError, raise_for_status, send_with_retries

__all__ = ["FhirServerError", "NdjsonWriter", "post_bundle", "post_resources", "transaction_bundles", "validate_r4",
           "write_ndjson"]


def validate_r4(resource: dict[str, Any]) -> dict[str, Any]:
    """Validate ``resource`` with its ``fhir.resources`` R4B model; return it unchanged."""
    rtype = resource.get("resourceType")
    try:
        model = get_fhir_model_class(str(rtype))
    except (KeyError, ValueError) as exc:
        raise DataError(f"unknown resourceType {rtype!r}", record_id=resource.get("id")) from exc
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(f"invalid {rtype}: {err['msg']}", record_id=resource.get("id"),
                        field=".".join(str(p) for p in err["loc"])) from exc
    return resource


class NdjsonWriter:
    """Bulk Data style output: ``<Type>.ndjson`` per resource type and a ``manifest.json``.

    Use as a context manager; :meth:`write` validates each resource before writing it.
    """

    def __init__(self, out: str | Path, *, request: str = "medmeta") -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.request = request
        self.counts: dict[str, int] = {}
        self._files: dict[str, Any] = {}

    def write(self, resource: dict[str, Any]) -> None:
        validate_r4(resource)
        rtype = resource["resourceType"]
        f = self._files.get(rtype)
        if f is None:
            f = self._files[rtype] = (self.out / f"{rtype}.ndjson").open("wb")
            self.counts[rtype] = 0
        f.write(orjson.dumps(resource) + b"\n")
        self.counts[rtype] += 1

    def write_all(self, resources: Iterable[dict[str, Any]]) -> None:
        for r in resources:
            self.write(r)

    def close(self) -> Path:
        """Close the files and write the manifest; returns its path."""
        for f in self._files.values():
            f.close()
        manifest = {
            "transactionTime": datetime.now(UTC).isoformat(timespec="seconds"),
            "request": self.request, "requiresAccessToken": False, "error": [],
            "output": [{"type": k, "url": f"{k}.ndjson", "count": n} for k, n in sorted(self.counts.items())],
        }
        path = self.out / "manifest.json"
        path.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        return path

    def __enter__(self) -> NdjsonWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_ndjson(resources: Iterable[dict[str, Any]], out: str | Path) -> dict[str, int]:
    """Validate and write ``resources`` as NDJSON per type into ``out``; returns counts per type."""
    with NdjsonWriter(out) as w:
        w.write_all(resources)
    return w.counts


def transaction_bundles(resources: Iterable[dict[str, Any]], chunk_size: int = 500) -> Iterator[dict[str, Any]]:
    """Transaction Bundles of at most ``chunk_size`` validated resources each.

    Resources with an id are PUT to ``Type/id`` (so posting twice does not duplicate them),
    others are POSTed.
    """
    entries: list[dict[str, Any]] = []
    for r in resources:
        validate_r4(r)
        rid = r.get("id")
        request = {"method": "PUT", "url": f"{r['resourceType']}/{rid}"} if rid else \
            {"method": "POST", "url": r["resourceType"]}
        entries.append({"resource": r, "request": request})
        if len(entries) >= chunk_size:
            yield {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            entries = []
    if entries:
        yield {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def post_bundle(client: httpx.Client, base_url: str, bundle: dict[str, Any], *, retries: int = 5,
                backoff_s: float = 1.0, on_retry: Callable[[], None] | None = None) -> dict[str, Any]:
    """POST one transaction Bundle to the server's base URL; return its transaction-response Bundle.

    A 429 or 5xx answer or a broken connection is retried (:func:`~medmeta.fhir.http.send_with_retries`);
    any other error status raises :class:`FhirServerError` with the server's OperationOutcome.
    """
    body = orjson.dumps(bundle)
    response = send_with_retries(
        lambda: client.post(base_url.rstrip("/") + "/", content=body,
                            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}),
        "POST transaction Bundle", retries=retries, backoff_s=backoff_s, on_retry=on_retry)
    return raise_for_status(response, base_url).json()


def post_resources(resources: Iterable[dict[str, Any]], base_url: str, *, token: str | None = None,
                   chunk_size: int = 500, retries: int = 5, backoff_s: float = 1.0,
                   client: httpx.Client | None = None) -> list[dict[str, Any]]:
    """Validate and POST ``resources`` as transaction Bundles of ``chunk_size``; return the responses."""
    own = client is None
    client = client or httpx.Client(timeout=60.0, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        return [post_bundle(client, base_url, b, retries=retries, backoff_s=backoff_s)
                for b in transaction_bundles(resources, chunk_size)]
    finally:
        if own:
            client.close()

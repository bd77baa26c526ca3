"""A FHIR server as a source: search with paging, and the Bulk Data ``$export`` flow (httpx)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from medmeta.errors import MedmetaError
from medmeta.fhir.http import FHIR_JSON, raise_for_status, retry_after_seconds, send_with_retries
from medmeta.fhir.normalise import FhirTables
from medmeta.fhir.sources import Entry, bundle_entries, iter_entries, list_files
from medmeta.fhir.validation import USED_TYPES


class FhirClient:
    """Reads from a FHIR R4 server at ``base_url``, with ``token`` sent as a bearer token.

    Every request is retried after a 429 or 5xx answer or a broken connection (``retries`` times,
    waiting the server's ``Retry-After`` or ``backoff_s`` doubled each time); any other error answer
    raises :class:`~medmeta.fhir.FhirServerError` with the server's OperationOutcome.
    """

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 60.0,
                 poll_limit_s: float = 3600.0, retries: int = 5, backoff_s: float = 1.0,
                 client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": FHIR_JSON, **({"Authorization": f"Bearer {token}"} if token else {})}
        self.http = client or httpx.Client(timeout=timeout, headers=headers, follow_redirects=True)
        self.poll_limit_s, self.retries, self.backoff_s = poll_limit_s, retries, backoff_s

    def _send(self, method: str, url: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        """One request, retried on 429, 5xx and broken connections; the answer whatever its status."""
        request = self.http.build_request(method, url, **kwargs)
        what = f"{method} {request.url.copy_with(query=None)}"  # no query: it may hold search values
        return send_with_retries(lambda: self.http.send(request, stream=stream), what, retries=self.retries,
                                 backoff_s=self.backoff_s)

    def _get(self, url: str, **kwargs: Any) -> httpx.Response:
        return raise_for_status(self._send("GET", url, **kwargs), f"GET {url}")

    # -- search ------------------------------------------------------------------------------------------
    def search(self, resource_type: str, params: dict[str, str] | None = None) -> Iterator[Entry]:
        """Every match of a search, following the Bundle's ``next`` links page after page."""
        url: str | None = f"{self.base_url}/{resource_type}"
        query = {"_count": "200", **(params or {})}
        while url:
            page = self._get(url, params=query).json()
            query = None  # the next link carries the query
            for entry in bundle_entries(page, url):
                r = entry.resource
                if r is not None and r.get("resourceType") == "OperationOutcome":
                    continue  # search outcome messages, not data
                yield entry
            url = next((link.get("url") for link in page.get("link") or () if link.get("relation") == "next"), None)

    def search_all(self, types: tuple[str, ...] = ("Patient", *sorted(USED_TYPES - {"Patient"}))) -> Iterator[Entry]:
        for rtype in types:
            yield from self.search(rtype)

    # -- Bulk Data $export ---------------------------------------------------------------------------------
    def export(self, out: str | Path, *, types: tuple[str, ...] | None = None, path: str = "$export") -> Path:
        """Run ``$export`` (kick-off, status polling honouring ``Retry-After``, download) into ``out``.

        ``path`` is ``$export``, ``Patient/$export`` or ``Group/<id>/$export``. Returns the folder,
        which holds the NDJSON files and the manifest.
        """
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        params = {"_type": ",".join(types)} if types else None
        kick = raise_for_status(self._send("GET", f"{self.base_url}/{path}", params=params,
                                           headers={"Prefer": "respond-async", "Accept": FHIR_JSON}),
                                "$export kick-off")
        if kick.status_code != 202:
            raise MedmetaError(f"$export kick-off answered HTTP {kick.status_code}, not 202 Accepted")
        status_url = kick.headers.get("Content-Location")
        if not status_url:
            raise MedmetaError("$export kick-off answered 202 without a Content-Location header")
        deadline = time.monotonic() + self.poll_limit_s
        while True:
            status = raise_for_status(self._send("GET", status_url), "$export status")
            if status.status_code == 200:
                manifest = status.json()
                break
            if time.monotonic() > deadline:
                raise MedmetaError(f"$export not complete after {self.poll_limit_s:.0f} s")
            wait = retry_after_seconds(status.headers.get("Retry-After"))
            time.sleep(1.0 if wait is None else wait)
        local = {**manifest}
        for key, prefix in (("output", ""), ("error", "error.")):  # the data, and the server's OperationOutcomes
            local[key] = []
            for i, item in enumerate(manifest.get(key) or []):
                name = f"{prefix}{item['type']}.{i:03d}.ndjson"
                response = raise_for_status(self._send("GET", item["url"], stream=True,
                                                       headers={"Accept": "application/fhir+ndjson"}),
                                            f"download {item['url']}")
                try:
                    with (out / name).open("wb") as f:
                        for chunk in response.iter_bytes():
                            f.write(chunk)
                finally:
                    response.close()
                local[key].append({"type": item["type"], "url": name, "count": item.get("count")})
        (out / "manifest.json").write_bytes(orjson.dumps(local, option=orjson.OPT_INDENT_2))
        return out

    def read(self, *, bulk: bool = False, out: str | Path | None = None) -> FhirTables:
        """The server's data as tables: by search, or with ``bulk=True`` by ``$export`` into ``out``."""
        from medmeta.fhir.reader import read_entries

        if not bulk:
            return read_entries(self.search_all())
        if out is not None:
            files = list_files(self.export(out, types=tuple(sorted(USED_TYPES))))
            return read_entries(iter_entries(files.files), files.skipped)
        with tempfile.TemporaryDirectory(prefix="medmeta-export-") as tmp:
            files = list_files(self.export(tmp, types=tuple(sorted(USED_TYPES))))
            return read_entries(iter_entries(files.files), files.skipped)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


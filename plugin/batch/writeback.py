"""Write results back to a FHIR server: transaction Bundles in chunks, retried on 429 and 5xx."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import httpx

from medmeta.fhir import FhirServerError, post_bundle, transaction_bundles

log = logging.getLogger("medmeta.batch")
RETRIED = {429, 500, 502, 503, 504}


def _wait(error: FhirServerError | httpx.TransportError, attempt: int, backoff_s: float) -> float:
    retry_after = error.retry_after if isinstance(error, FhirServerError) else None
    return retry_after if retry_after is not None else backoff_s * 2**attempt


def post_with_retries(resources: Iterable[dict[str, Any]], base_url: str, *, token: str | None = None,
                      chunk_size: int = 500, retries: int = 5, backoff_s: float = 1.0,
                      dry_run: bool = False, client: httpx.Client | None = None) -> dict[str, int]:
    """POST ``resources`` as transaction Bundles; return counts of bundles and resources sent.

    A 429 or 5xx answer (or a broken connection) is retried up to ``retries`` times, waiting
    ``Retry-After`` when the server gives it, else ``backoff_s`` doubled at each attempt. A 4xx
    answer raises :class:`FhirServerError` at once with the server's OperationOutcome. With
    ``dry_run`` the Bundles are built and validated but not sent.
    """
    sent = {"bundles": 0, "resources": 0, "retries": 0}
    own = client is None and not dry_run
    if own:
        client = httpx.Client(timeout=120.0, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        for bundle in transaction_bundles(resources, chunk_size):
            for attempt in range(retries + 1):
                if dry_run:
                    break
                try:
                    post_bundle(client, base_url, bundle)
                    break
                except (FhirServerError, httpx.TransportError) as exc:
                    status = getattr(exc, "status", None)
                    if (status is not None and status not in RETRIED) or attempt == retries:
                        raise
                    wait = _wait(exc, attempt, backoff_s)
                    log.warning("write-back: %s; retrying in %.1f s", status or type(exc).__name__, wait)
                    sent["retries"] += 1
                    time.sleep(wait)
            sent["bundles"] += 1
            sent["resources"] += len(bundle["entry"])
    finally:
        if own:
            client.close()
    return sent

"""Write results back to a FHIR server: transaction Bundles in chunks, retried on 429 and 5xx."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from medmeta.fhir import post_bundle, transaction_bundles


def post_with_retries(resources: Iterable[dict[str, Any]], base_url: str, *, token: str | None = None,
                      chunk_size: int = 500, retries: int = 5, backoff_s: float = 1.0,
                      dry_run: bool = False, client: httpx.Client | None = None) -> dict[str, int]:
    """POST ``resources`` as transaction Bundles; return counts of bundles, resources and retries.

    A 429 or 5xx answer (or a broken connection) is retried up to ``retries`` times, waiting
    ``Retry-After`` when the server gives it, else ``backoff_s`` doubled at each attempt. A 4xx
    answer raises :class:`~medmeta.fhir.FhirServerError` at once with the server's OperationOutcome.
    With ``dry_run`` the Bundles are built and validated but not sent.
    """
    sent = {"bundles": 0, "resources": 0, "retries": 0}

    def count_retry() -> None:
        sent["retries"] += 1

    own = client is None and not dry_run
    if own:
        client = httpx.Client(timeout=120.0, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        for bundle in transaction_bundles(resources, chunk_size):
            if not dry_run:
                post_bundle(client, base_url, bundle, retries=retries, backoff_s=backoff_s, on_retry=count_retry)
            sent["bundles"] += 1
            sent["resources"] += len(bundle["entry"])
    finally:
        if own:
            client.close()
    return sent

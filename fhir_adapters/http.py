"""Talking to FHIR servers: errors that keep the server's OperationOutcome, and retries on 429 and 5xx.

Every request medmeta sends to a server (search pages, Bulk Data status polls and downloads,
transaction Bundles) goes through :func:`send_with_retries`, so they all retry the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from medmeta.errors import MedmetaError
from medmeta.fhir.sources import outcome_summary

FHIR_JSON = "application/fhir+json"
#: Answers worth trying again: too many requests, and the server's or a gateway's transient failures.
RETRIED = frozenset({429, 500, 502, 503, 504})

log = logging.getLogger("medmeta.fhir")


class FhirServerError(MedmetaError):
    """A FHIR server refused a request; ``status``, the server's ``outcome`` (OperationOutcome) and the
    ``Retry-After`` it asked for (seconds, when given) are kept."""

    def __init__(self, message: str, status: int, outcome: dict[str, Any] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.outcome, self.retry_after = status, outcome, retry_after


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (None when absent or invalid)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def outcome_text(response: httpx.Response) -> tuple[str, dict[str, Any] | None]:
    """The diagnostics of an OperationOutcome response, or its start when it is something else."""
    try:
        doc = response.json()
    except ValueError:
        return response.text[:200], None
    if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome":
        return outcome_summary(doc), doc
    return str(doc)[:200], None


def raise_for_status(response: httpx.Response, what: str) -> httpx.Response:
    """``response`` if it succeeded, else a :class:`FhirServerError` with the server's OperationOutcome."""
    if response.status_code >= 400:
        if not response.is_closed:
            response.read()
        text, outcome = outcome_text(response)
        raise FhirServerError(f"{what}: HTTP {response.status_code}: {text}", response.status_code, outcome,
                              retry_after_seconds(response.headers.get("Retry-After")))
    return response


def send_with_retries(send: Callable[[], httpx.Response], what: str, *, retries: int = 5, backoff_s: float = 1.0,
                      on_retry: Callable[[], None] | None = None) -> httpx.Response:
    """``send()`` again after a 429 or 5xx answer or a broken connection, up to ``retries`` more times.

    It waits the server's ``Retry-After`` when given, else ``backoff_s`` doubled at each attempt.
    The last answer is returned whatever its status (check it with :func:`raise_for_status`); a
    broken connection on the last attempt raises ``httpx.TransportError``.
    """
    attempt = 0
    while True:
        try:
            response = send()
        except httpx.TransportError as exc:
            if attempt >= retries:
                raise
            why, wait = type(exc).__name__, backoff_s * 2**attempt
        else:
            if response.status_code not in RETRIED or attempt >= retries:
                return response
            why = f"HTTP {response.status_code}"
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            wait = backoff_s * 2**attempt if wait is None else wait
            response.close()
        log.warning("%s: %s; retrying in %.1f s", what, why, wait)
        if on_retry is not None:
            on_retry()
        time.sleep(wait)
        attempt += 1

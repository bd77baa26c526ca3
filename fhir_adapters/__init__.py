"""FHIR adapters: read R4 records into tables and tasks, write results back as valid FHIR.

Reading: :func:`read` (Bundle files, Bulk NDJSON folders, FHIR servers) -> :class:`FhirTables`.
IWPC: :func:`iwpc_resources` (a CSV row -> FHIR) and :func:`iwpc_frame` (tables -> the CSV loader's columns).
Tasks: :func:`patient_tasks`, :func:`population_tasks`.
Writing: :func:`write_ndjson`, :class:`NdjsonWriter`, :func:`transaction_bundles`, :func:`post_resources`,
and the result builders of :mod:`medmeta.fhir.results`.
"""

from medmeta.fhir.client import FhirClient
from medmeta.fhir.iwpc import iwpc_frame, iwpc_resources
from medmeta.fhir.normalise import Counts, FhirTables
from medmeta.fhir.reader import read, read_entries, write_tables
from medmeta.fhir.results import ModelInfo, dose_proposal, forecast, provenance, risk_assessment
from medmeta.fhir.tasks import patient_tasks, population_tasks
from medmeta.fhir.writers import (
    FhirServerError,
    NdjsonWriter,
    post_bundle,
    post_resources,
    transaction_bundles,
    validate_r4,
    write_ndjson,
)

__all__ = [
    "Counts", "FhirClient", "FhirServerError", "FhirTables", "ModelInfo", "NdjsonWriter", "dose_proposal",
    "forecast", "iwpc_frame", "iwpc_resources", "patient_tasks", "population_tasks", "post_bundle",
    "post_resources", "provenance", "read", "read_entries", "risk_assessment", "transaction_bundles",
    "validate_r4", "write_ndjson", "write_tables",
]

"""What every page of the dashboard is given: settings, the records, the chosen patient, the user, the audit log."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from medmeta.dashboard.audit import AuditLog
from medmeta.dashboard.settings import Settings
from medmeta.fhir import FhirTables


@dataclass
class Context:
    settings: Settings
    tables: FhirTables
    summary: pd.DataFrame
    patient: str | None
    user: str
    audit: AuditLog
    key: str  # identifies the source in the caches

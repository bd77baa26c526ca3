"""The audit trail of the dashboard: every suggestion shown, accepted or overridden (SQLite).

The audit log is the one place that records patient ids next to suggestions; it is a
clinical record, kept apart from the application log (which never names patients).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

ACTIONS = ("shown", "accepted", "overridden")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    user TEXT NOT NULL,
    patient TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    suggestion TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('shown', 'accepted', 'overridden')),
    reason TEXT,
    CHECK (action != 'overridden' OR length(trim(coalesce(reason, ''))) > 0)
)
"""


@dataclass(frozen=True)
class AuditEvent:
    user: str
    patient: str
    kind: str  # "diagnosis", "warfarin", "glucose", ...
    model: str
    model_version: str
    suggestion: dict[str, Any]
    action: str
    reason: str | None = None


class AuditLog:
    """Append-only SQLite log of suggestion events; an override must carry a reason."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def record(self, event: AuditEvent) -> int:
        """Store one event and return its id."""
        if event.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {event.action!r}")
        if event.action == "overridden" and not (event.reason or "").strip():
            raise ValueError("an override needs a reason")
        if not event.user.strip():
            raise ValueError("an audit event needs a user")
        row = (datetime.now(UTC).isoformat(timespec="seconds"), event.user, event.patient, event.kind,
               event.model, event.model_version, json.dumps(event.suggestion, sort_keys=True, default=str),
               event.action, event.reason)
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                "INSERT INTO events (time, user, patient, kind, model, model_version, suggestion, action, reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            return int(cursor.lastrowid)

    def events(self, patient: str | None = None) -> pd.DataFrame:
        """All events, or one patient's, oldest first."""
        query, args = "SELECT * FROM events", ()
        if patient is not None:
            query, args = query + " WHERE patient = ?", (patient,)
        with closing(self._connect()) as db:
            return pd.read_sql_query(query + " ORDER BY id", db, params=args)

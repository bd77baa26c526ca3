"""Accepting or overriding a suggestion; every decision goes to the audit log."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import streamlit as st

from medmeta.dashboard.audit import AuditEvent, AuditLog

log = logging.getLogger("medmeta.dashboard")


def review(audit: AuditLog, *, user: str, patient: str, kind: str, model: str, version: str,
           suggestion: dict[str, Any], hint: str = "e.g. 35 mg/week") -> None:
    """Buttons to accept the suggestion or override it with a reason, recorded with user, time, patient,
    model version and the suggestion. The suggestion being shown is recorded once per session."""
    digest = hashlib.sha256(json.dumps(suggestion, sort_keys=True, default=str).encode()).hexdigest()[:12]
    key = f"{kind}-{patient}-{digest}"

    def event(action: str, reason: str | None = None, extra: dict[str, Any] | None = None) -> None:
        audit.record(AuditEvent(user or "unknown", patient, kind, model, version, {**suggestion, **(extra or {})},
                                action, reason))
        log.info("suggestion %s (%s)", action, kind)  # no patient data in the application log

    if f"shown-{key}" not in st.session_state:
        event("shown")
        st.session_state[f"shown-{key}"] = True
    with st.container(border=True):
        st.caption("Decision support, not an order: accept it, or override it with your decision and a reason.")
        if not user:
            st.info("Enter your name in the sidebar to accept or override.")
        accept, override = st.columns(2)
        if accept.button("Accept", key=f"accept-{key}", disabled=not user, type="primary"):
            event("accepted")
            st.success("Accepted; recorded in the audit log.")
        decision = override.text_input("Your decision", key=f"decision-{key}", placeholder=hint)
        reason = override.text_input("Reason for overriding", key=f"reason-{key}")
        if override.button("Override", key=f"override-{key}", disabled=not user):
            if not reason.strip():
                st.error("An override needs a reason.")
            else:
                event("overridden", reason.strip(), {"clinician_decision": decision.strip()})
                st.warning("Overridden; recorded in the audit log with your reason.")

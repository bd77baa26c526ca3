"""Audit log: every suggestion shown, accepted or overridden, with user, time, patient and model version."""

from __future__ import annotations

import streamlit as st

from medmeta.dashboard.context import Context


def render(ctx: Context) -> None:
    st.header("Audit log")
    st.caption(f"SQLite: {ctx.settings.audit_db}")
    only = st.checkbox("Only the current patient", value=True, key="audit-only-patient")
    events = ctx.audit.events(ctx.patient if only else None)
    if events.empty:
        st.info("No events yet.")
        return
    counts = events["action"].value_counts()
    cols = st.columns(3)
    for col, action in zip(cols, ("shown", "accepted", "overridden"), strict=True):
        col.metric(action, int(counts.get(action, 0)))
    st.dataframe(events.sort_values("id", ascending=False), hide_index=True, width="stretch")

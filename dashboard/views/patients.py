"""Patients: a searchable list from the FHIR source, with the modalities on record for each."""

from __future__ import annotations

import streamlit as st

from medmeta.dashboard.context import Context


def render(ctx: Context) -> None:
    st.header("Patients")
    summary = ctx.summary
    query = st.text_input("Search (patient id, sex, race)", key="patient-search").strip().lower()
    shown = summary
    if query:
        text = summary[["patient", "sex", "race"]].astype(str).agg(" ".join, axis=1).str.lower()
        shown = summary[text.str.contains(query, regex=False)]
    modality = st.multiselect("With", ["images", "labs", "cgm", "genotype"], key="patient-modalities")
    for m in modality:
        shown = shown[shown[m].astype(bool)]
    st.caption(f"{len(shown):,} of {len(summary):,} patients")
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config={"images": "images", "labs": "lab results", "cgm": "CGM readings",
                                "genotype": st.column_config.CheckboxColumn("genotype")})
    if len(shown):
        st.selectbox("Open patient", shown["patient"].tolist(), index=None, placeholder="Choose a patient to open",
                     key="patient-open", on_change=_open)


def _open() -> None:
    if st.session_state.get("patient-open"):
        st.session_state["patient"] = st.session_state["patient-open"]

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
        options = shown["patient"].tolist()
        current = ctx.patient if ctx.patient in options else options[0]
        st.selectbox("Open patient", options, index=options.index(current), key="patient-open",
                     on_change=lambda: st.session_state.update(patient=st.session_state["patient-open"]))

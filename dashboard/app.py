"""The medmeta clinician dashboard: ``streamlit run dashboard/app.py`` or ``medmeta dashboard``.

Opens on the embedded sample data with no set-up, or on the FHIR source, models and bundles
named in the environment (see :mod:`medmeta.dashboard.settings`).
"""

import os

import streamlit as st

from medmeta import DISCLAIMER
from medmeta.dashboard import data
from medmeta.dashboard.audit import AuditLog
from medmeta.dashboard.context import Context
from medmeta.dashboard.views import audit_log, diagnosis, models, patients, treatment

PAGES = {"Patients": patients, "Diagnosis": diagnosis, "Treatment": treatment, "Models": models,
         "Audit log": audit_log}

st.set_page_config(page_title="medmeta", page_icon=":material/clinical_notes:", layout="wide")
st.error(f"**Not for clinical use.** {DISCLAIMER} Every suggestion here is decision support, never an order.",
         icon=":material/warning:")

settings = data.settings()
key = data.source_key(settings)
tables = data.tables(settings.source, str(settings.home))
summary = data.patient_summary(tables, key)

with st.sidebar:
    st.title("medmeta")
    user = st.text_input("Clinician (your name)", value=os.environ.get("MEDMETA_USER", ""), key="user").strip()
    page = st.radio("Page", list(PAGES), key="page")
    ids = summary["patient"].tolist()
    if ids and st.session_state.get("patient") not in ids:
        st.session_state["patient"] = ids[0]
    patient = st.selectbox("Patient", ids, key="patient") if ids else None
    st.caption(f"Source: {settings.source or 'embedded sample export'}  \n{len(ids):,} patients")

PAGES[page].render(Context(settings, tables, summary, patient, user, AuditLog(settings.audit_db), key))

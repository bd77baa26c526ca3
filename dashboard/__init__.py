"""The clinician dashboard (Streamlit): run with ``medmeta dashboard``."""

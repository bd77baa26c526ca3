"""What the dashboard loads, each once per process (Streamlit caches): the FHIR tables, models, summaries."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from medmeta.dashboard.settings import Settings
from medmeta.fhir import FhirTables

log = logging.getLogger("medmeta.dashboard")


@st.cache_resource(show_spinner="Reading the FHIR records...")
def tables(source: str | None, home: str) -> FhirTables:
    """The normalised tables of the source (the embedded sample export when there is none)."""
    from medmeta.demo import build_sample_export
    from medmeta.fhir import read

    if source is None:
        source = str(Path(home) / "sample-export")
        build_sample_export(Path(source))
    t = read(source)
    log.info("FHIR source read: %s", t.counts.summary())  # counts only: no patient data in the log
    return t


@st.cache_data(show_spinner=False)
def patient_summary(_tables: FhirTables, key: str) -> pd.DataFrame:
    """One row per patient: sex, age, race and the modalities on record (images, labs, CGM, genotype)."""
    from medmeta.fhir.cgm import CGM_MASS, CGM_MOLAR

    t = _tables
    p = t.patients
    obs = t.observations
    cgm = obs["code"].isin((CGM_MASS, CGM_MOLAR))
    frame = pd.DataFrame({
        "patient": p["patient_id"].astype(str),
        "sex": p["gender"].fillna("unknown").astype(str),
        "age": p["age"].round(0).astype("Int64"),
        "race": p["race"].fillna("unknown").astype(str),
    })
    count = lambda s: frame["patient"].map(s.value_counts()).fillna(0).astype(int)  # noqa: E731
    frame["images"] = count(t.images["patient_id"].astype(str))
    frame["labs"] = count(obs.loc[~cgm, "patient_id"].astype(str))
    frame["cgm"] = count(obs.loc[cgm, "patient_id"].astype(str))
    frame["genotype"] = frame["patient"].isin(set(t.pgx["patient_id"].astype(str)))
    return frame.sort_values("patient").reset_index(drop=True)


@st.cache_resource(show_spinner="Loading the warfarin model...")
def warfarin_model(folder: str):
    from medmeta.treatment.warfarin import WarfarinDoseModel

    return WarfarinDoseModel.load(folder)


@st.cache_resource(show_spinner="Loading the fusion model...")
def fusion_model(folder: str):
    from medmeta.fusion.model import FusionModel

    return FusionModel.load(folder)


@st.cache_resource(show_spinner="Loading the glucose model...")
def glucose_model(folder: str):
    from medmeta.treatment.glucose import GlucoseForecaster

    return GlucoseForecaster.load(folder)


@st.cache_data(show_spinner=False)
def iwpc_rows(_tables: FhirTables, key: str) -> pd.DataFrame:
    """The warfarin model's input columns of every patient, indexed by patient id."""
    from medmeta.fhir import iwpc_frame

    return iwpc_frame(_tables).set_index("subject_id", drop=False)


@st.cache_data(show_spinner=False)
def cgm(_tables: FhirTables, key: str) -> dict:
    from medmeta.fhir.cgm import cgm_series

    return cgm_series(_tables)


@st.cache_data(show_spinner=False)
def model_version(name: str, folder: str) -> str:
    """``<medmeta version> sha256:<first 12 hex of the weights>``: what the audit log records."""
    from medmeta.scoring import model_info

    info = model_info(name, folder)
    return f"{info.version} sha256:{(info.checksum or '')[:12]}"


def settings() -> Settings:
    return Settings.from_env()


def source_key(s: Settings) -> str:
    """Identifies the loaded source in the caches."""
    return f"{s.source or 'sample'}|{s.home}"


#: Cases of each class that a new support memory starts with (train images of the embedded MedMNIST samples).
SEED_CASES_PER_CLASS = 10


def bundles(folder: Path) -> list[Path]:
    """The few-shot bundles in ``folder`` (those with ``configs/metadata.json`` and weights)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if (p / "configs" / "metadata.json").is_file() and (p / "models" / "model.pt").is_file())


@st.cache_resource(show_spinner="Loading the few-shot bundle and its support memory...")
def support_memory(bundle: str, home: str):
    """The dashboard's support memory for ``bundle``, under ``home/support-memory/<bundle name>``.

    A new memory starts with the bundle's own classes (its shipped support set's ``channel_def``),
    :data:`SEED_CASES_PER_CLASS` train images each from the MedMNIST files of the data root, so
    that every suggestion can show the stored cases it resembles as images.
    """
    from medmeta.bundle import load_bundle
    from medmeta.memory import SupportMemory

    learner = load_bundle(bundle)
    memory = SupportMemory(Path(home) / "support-memory" / Path(bundle).name, learner)
    if memory.version == 0:
        _seed(memory, learner.classes_)
    log.info("support memory of %s at version %d (%d cases)", Path(bundle).name, memory.version, len(memory))
    return memory


def _seed(memory, classes: list[str]) -> None:
    from medmeta.datasets.medmnist import load_medmnist
    from medmeta.paths import medmnist_file

    for dataset in dict.fromkeys(c.split(":", 1)[0] for c in classes):
        images = load_medmnist(medmnist_file(dataset), "train")
        keys = images.item_keys()
        for key in (c for c in classes if c.startswith(f"{dataset}:")):
            index = np.flatnonzero(keys == key)[:SEED_CASES_PER_CLASS]
            if len(index):
                memory.add(images.images[index], key, [f"{dataset}.npz train #{i}" for i in index],
                           note="initial support set: the bundle's classes, from the MedMNIST train split")

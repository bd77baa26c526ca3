"""Few-shot image diagnosis as FHIR RiskAssessments: one per image (FHIR ``Media``) of a patient.

Predictions come from a :class:`~medmeta.memory.SupportMemory` opened with the protonet bundle's
network: class probabilities, and the stored cases most similar to the image as evidence. The
memory is the folder given as ``memory`` (or in ``MEDMETA_DIAGNOSIS_MEMORY``), the one a clinician
keeps with ``medmeta fewshot memory add``; without one, a memory of ``cases_per_class`` images of
each of the bundle's classes from the embedded sample data, built once per process in a
temporary folder. Results are ``RiskAssessment`` resources (status preliminary, ``basis`` the
Media), which the FHIR reader never takes back in as inputs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np

from medmeta.errors import DataError, MedmetaError
from medmeta.fhir import FhirTables, ModelInfo, risk_assessment
from medmeta.scoring import PatientScores

_NS = uuid.UUID("8f3b2a57-6d1e-4c9a-9b0e-2f6c7d1a5e84")
#: The system of the class codes in ``RiskAssessment.prediction.outcome`` (codes are the memory's class names).
CLASS_SYSTEM = "urn:medmeta:fewshot-class"
BUNDLE_NAME = "fewshot_protonet_classification"


def shipped_bundle() -> Path:
    """The protonet bundle of this checkout (``MEDMETA_DIAGNOSIS_BUNDLE`` overrides it)."""
    import medmeta

    setting = os.environ.get("MEDMETA_DIAGNOSIS_BUNDLE")
    return Path(setting) if setting else Path(medmeta.__file__).resolve().parents[1] / "monai_bundles" / BUNDLE_NAME


def sample_memory(directory: Path, learner, classes: list[str], per_class: int) -> None:
    """Fill ``directory`` with ``per_class`` train-split images of each class key (``"bloodmnist:platelet"``)
    from the embedded sample MedMNIST files; source ids name file, split and row."""
    from medmeta.datasets.medmnist import load_medmnist
    from medmeta.memory import SupportMemory
    from medmeta.paths import sample_data_dir

    store = SupportMemory(directory, learner)
    sets = {}
    for key in classes:
        dataset, _, name = key.partition(":")
        if dataset not in sets:
            sets[dataset] = load_medmnist(sample_data_dir() / "medmnist" / f"{dataset}.npz", "train")
        images = sets[dataset]
        rows = np.flatnonzero(images.labels == images.class_names.index(name))[:per_class]
        store.add(images.images[rows], key, [f"{dataset}.npz:train:{r}" for r in rows], note="embedded sample")


class DiagnosisScorer:
    """The protonet bundle's network with a support memory, behind a FHIR interface (one result per image)."""

    name = "fewshot-diagnosis"

    def __init__(self, bundle: str | Path | None = None, memory: str | Path | None = None, *, top_k: int = 3,
                 cases_per_class: int = 10) -> None:
        import medmeta
        from medmeta.bundle import MODEL_FILE, load_bundle, read_metadata

        self.bundle = Path(bundle) if bundle else shipped_bundle()
        setting = memory or os.environ.get("MEDMETA_DIAGNOSIS_MEMORY")
        self.memory_dir = Path(setting) if setting else None
        if self.memory_dir is not None and not (self.memory_dir / "CURRENT").is_file():
            raise DataError("not a support memory (no CURRENT file); create one with `medmeta fewshot memory add`",
                            source=self.memory_dir)
        meta = read_metadata(self.bundle)
        self.learner = load_bundle(self.bundle)
        self.top_k, self.cases_per_class = top_k, cases_per_class
        self._classes = list(meta["network_data_format"]["outputs"]["pred"]["channel_def"].values())
        checksum = hashlib.sha256((self.bundle / MODEL_FILE).read_bytes()).hexdigest()
        self.model = ModelInfo(self.name, f"{self.bundle.name} {meta['version']}, medmeta {medmeta.__version__}",
                               checksum)
        self._store = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def store(self):
        """The support memory, opened (or, without a setting, built) on first use."""
        from medmeta.memory import SupportMemory

        if self._store is None:
            if self.memory_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="medmeta-memory-")
                sample_memory(Path(self._tmp.name), self.learner, self._classes, self.cases_per_class)
            self._store = SupportMemory(self.memory_dir or self._tmp.name, self.learner)
        return self._store

    def score(self, tables: FhirTables, *, run_time: str) -> PatientScores:
        from medmeta.fhir.media import decode_image

        images = tables.images
        with_images = set(images["patient_id"].astype(str))
        out = PatientScores(skipped={str(p): "no images (FHIR Media)" for p in tables.patients["patient_id"]
                                     if str(p) not in with_images})
        for pid, rows in images.groupby("patient_id", sort=True):
            pid, resources, problems = str(pid), [], []
            for row in rows.sort_values(["time", "media_id"]).to_dict("records"):
                try:
                    pixels = decode_image(row)
                    [p] = self.store.predict(np.array(pixels[None]), top_k=self.top_k)
                except (DataError, MedmetaError) as exc:
                    problems.append(f"Media/{row['media_id']}: {exc}")
                    continue
                resources.append(self._result(pid, row["media_id"], p, run_time))
            if resources:
                out.results[pid] = resources
            if problems:
                out.skipped[pid] = "images not scored: " + "; ".join(problems)
        return out

    def _result(self, pid: str, media_id: str, p, run_time: str) -> dict:
        evidence = "; ".join(f"case {e.case_id} ({e.label}, from {e.source_id}, cosine similarity "
                             f"{e.similarity:.3f})" for e in p.evidence)
        note = (f"Few-shot classification of Media/{media_id}: most likely {p.predicted} "
                f"(p = {p.probabilities[p.predicted]:.2f}). Most similar stored cases: {evidence}. "
                f"Support memory version {p.memory_version}, encoder {p.encoder}.")
        probabilities = {(CLASS_SYSTEM, c, c.split(":", 1)[-1]): round(v, 4) for c, v in p.probabilities.items()}
        return risk_assessment(pid, probabilities, self.model, basis=[f"Media/{media_id}"], occurrence=run_time,
                               rid=str(uuid.uuid5(_NS, f"{self.name}|{pid}|{media_id}|{run_time}")), note=note)

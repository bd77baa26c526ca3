"""The shipped models as FHIR services: FHIR tables in, FHIR result resources out, per patient.

A :class:`Scorer` is what the batch job, ``medmeta warfarin suggest`` and the dashboard call. Each
model family has its scorer in a module of this package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from medmeta.fhir import FhirTables, ModelInfo


@dataclass
class PatientScores:
    """One model's results for a partition: FHIR resources per patient, and why others were skipped."""

    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


class Scorer(Protocol):
    """A model wrapped for the batch job.

    ``score`` sees the normalised tables of a partition (a few dozen patients) and returns, for
    each patient it applies to, validated FHIR result resources, and for the others the reason
    it does not apply. Result ids and times must be deterministic (derived from the patient,
    the model and ``run_time``), so a re-run or a resumed run writes the same records.
    """

    name: str
    model: ModelInfo

    def score(self, tables: FhirTables, *, run_time: str) -> PatientScores: ...


def model_info(name: str, folder) -> ModelInfo:
    """A model's name, version (medmeta version and training date from its config) and weights checksum."""
    import hashlib
    import json
    from pathlib import Path

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    weights = next(iter(sorted(folder.glob("*.safetensors"))), None)
    checksum = hashlib.sha256(weights.read_bytes()).hexdigest() if weights else None
    return ModelInfo(name, str(config.get("medmeta_version", "unknown")), checksum)


def default_scorers() -> list[Scorer]:
    """Every shipped model that applies to FHIR records, as a scorer (models load once per process).

    A warfarin dose is proposed by one model per patient: the warfarin model when the record has a readable
    CYP2C9/VKORC1 genotype, the fused model (which uses the modalities present) when it has none.
    """
    import logging

    from medmeta.scoring.diagnosis import DiagnosisScorer, shipped_bundle
    from medmeta.scoring.fusion import FusionScorer
    from medmeta.scoring.glucose import GlucoseScorer
    from medmeta.scoring.warfarin import WarfarinScorer

    scorers: list[Scorer] = [WarfarinScorer(genotyped_only=True), FusionScorer(ungenotyped_only=True),
                             GlucoseScorer()]
    if (shipped_bundle() / "configs" / "metadata.json").is_file():  # the bundles live in the source tree
        scorers.append(DiagnosisScorer())
    else:
        logging.getLogger(__name__).warning("image diagnosis left out: no bundle at %s (set MEDMETA_DIAGNOSIS_BUNDLE)",
                                            shipped_bundle())
    return scorers

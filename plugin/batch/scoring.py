"""What the batch job asks of a model: score the patients of a partition it applies to."""

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

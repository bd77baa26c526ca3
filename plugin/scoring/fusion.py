"""Warfarin dose proposals from the fused model (clinical record + genotype, either may be missing).

It proposes a warfarin dose for the same patients as :class:`~medmeta.scoring.warfarin.WarfarinScorer`, so a
batch job gives each patient to one of them: :func:`medmeta.scoring.default_scorers` routes patients without a
readable genotype here (where it was measured better) and the others to the warfarin model;
``BatchConfig(scorers="medmeta.scoring.fusion:scorers")`` runs it for every patient. docs/fusion.md has the numbers.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from medmeta.fhir import FhirTables, dose_proposal, iwpc_frame
from medmeta.scoring import PatientScores, Scorer, model_info
from medmeta.scoring.warfarin import WARFARIN, applies, route_by_genotype

_NS = uuid.UUID("6f1c3a52-9e0d-4b7a-8c1e-2d5f7a9b3c64")


class FusionScorer:
    """The shipped warfarin fusion model (or the one in ``model``) behind a FHIR interface.

    Each proposal says which modalities it used; without a genotype it uses the clinical record alone and
    carries the interval calibrated for that case. Genotype calls it cannot read count as unknown (the
    proposal's note names them). With ``ungenotyped_only``, patients with a readable genotype are left to
    the warfarin model (:class:`~medmeta.scoring.warfarin.WarfarinScorer` with ``genotyped_only``).
    """

    name = "warfarin-fusion"

    def __init__(self, model: str | Path | None = None, *, ungenotyped_only: bool = False) -> None:
        from medmeta.fusion.model import FusionModel
        from medmeta.models import model_dir

        folder = Path(model) if model else model_dir("warfarin_fusion")
        self.fused = FusionModel.load(folder)
        self.model = model_info(self.name, folder)
        self.ungenotyped_only = ungenotyped_only

    def score(self, tables: FhirTables, *, run_time: str) -> PatientScores:
        from medmeta.fusion.datasets import warfarin_data
        from medmeta.fusion.inference import predict_multimodal

        frame = iwpc_frame(tables)
        ok = applies(frame)
        out = PatientScores(skipped={str(p): "no warfarin indication, genotype or warfarin record"
                                     for p in frame.loc[~ok, "subject_id"]})
        if self.ungenotyped_only and ok.any():
            ok = route_by_genotype(frame, ok, out, keep_genotyped=False)
        if not ok.any():
            return out
        data = warfarin_data(frame[ok].reset_index(drop=True))
        predictions, rejected = predict_multimodal(self.fused, data.x)
        out.skipped.update({r.record_id: r.reason for r in rejected})
        unreadable: dict[str, list[str]] = {}
        for r in data.rejected:
            unreadable.setdefault(str(r.record_id), []).append(str(r.field))
        genotypes = tables.genotypes.groupby("patient_id")["observation_id"].unique()
        for p in predictions:
            used = " + ".join(f"{m} (weight {p.modality_weights[m]:.2f})" for m in p.modalities_used)
            note = f"Fusion model ({self.fused.fusion}) used: {used}."
            if p.modalities_missing:
                note += f" Missing: {', '.join(p.modalities_missing)}."
            if not p.intervals:
                note += " No prediction interval: too few calibration patients had this set of modalities."
            if p.patient_id in unreadable:
                note += f" Genotype calls not interpretable, read as unknown: {', '.join(unreadable[p.patient_id])}."
            if "90%" in p.intervals:
                note += " 90% prediction interval {:.1f}-{:.1f} mg/week.".format(*p.intervals["90%"])
            interval = (*p.intervals["80%"], 0.8) if "80%" in p.intervals else None
            out.results[p.patient_id] = [dose_proposal(
                p.patient_id, WARFARIN, float(p.prediction), "mg", self.model, per=(1, "wk"), interval=interval,
                supporting=[f"Observation/{o}" for o in genotypes.get(p.patient_id, [])],
                rid=str(uuid.uuid5(_NS, f"{self.name}|{p.patient_id}|{run_time}")), authored=run_time, note=note)]
        return out


def scorers() -> list[Scorer]:
    """The batch job's models with the fused warfarin model in place of the warfarin dose model."""
    from medmeta.scoring.glucose import GlucoseScorer

    return [FusionScorer(), GlucoseScorer()]

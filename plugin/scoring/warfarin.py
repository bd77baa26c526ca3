"""Warfarin dose suggestions as FHIR MedicationRequest proposals, for patients with an indication or a genotype."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd

from medmeta.fhir import FhirTables, dose_proposal, iwpc_frame
from medmeta.fhir import terminology as t
from medmeta.fhir.iwpc import INDICATION_COLUMNS, VKORC1_COLUMNS
from medmeta.scoring import PatientScores, model_info

WARFARIN = (t.RXNORM, t.RXNORM_WARFARIN, "warfarin")
_NS = uuid.UUID("0b7d6c1e-5c0e-4c8f-8f55-3f0a8c2d9e41")


def applies(frame: pd.DataFrame) -> pd.Series:
    """Patients with a warfarin indication, a CYP2C9 or VKORC1 genotype, or a warfarin record."""
    indication = frame[list(INDICATION_COLUMNS)].fillna(False).astype(bool).any(axis=1)
    genotype = frame[["cyp2c9", *VKORC1_COLUMNS]].notna().any(axis=1)
    return indication | genotype | frame["dose_mg_week"].notna()


def genotyped(frame: pd.DataFrame) -> pd.Series:
    """Patients with at least one readable CYP2C9 or VKORC1 call (the fusion evaluation's "complete" or "partial")."""
    from medmeta.fusion.datasets import warfarin_data

    return pd.Series(warfarin_data(frame).info["genotype"].to_numpy() != "none", index=frame.index)


def route_by_genotype(frame: pd.DataFrame, ok: pd.Series, out: PatientScores, *, keep_genotyped: bool) -> pd.Series:
    """Which of the two warfarin models proposes a patient's dose in the batch job (docs/fusion.md): the warfarin
    model with a readable genotype (better, paired, out of fold), the fused model without one (-2.84 mg/week MAE).

    Returns ``ok`` less the patients the other model takes; those are listed in ``out.skipped`` with the reason.
    """
    other = ok & (~genotyped(frame) if keep_genotyped else genotyped(frame))
    why = ("no readable CYP2C9/VKORC1 genotype: the fused model (warfarin-fusion) proposes the dose" if keep_genotyped
           else "a CYP2C9/VKORC1 genotype: the warfarin model (warfarin-dose) proposes the dose")
    out.skipped.update({str(p): why for p in frame.loc[other, "subject_id"]})
    return ok & ~other


class WarfarinScorer:
    """The shipped warfarin dose model (or the one in ``model``) behind a FHIR interface.

    With ``genotyped_only``, patients without a readable genotype are left to the fused model
    (:class:`~medmeta.scoring.fusion.FusionScorer` with ``ungenotyped_only``), as the batch job does.
    """

    name = "warfarin-dose"

    def __init__(self, model: str | Path | None = None, *, genotyped_only: bool = False) -> None:
        from medmeta.models import model_dir
        from medmeta.treatment.warfarin import WarfarinDoseModel

        folder = Path(model) if model else model_dir("warfarin")
        self.dose_model = WarfarinDoseModel.load(folder)
        self.model = model_info(self.name, folder)
        self.genotyped_only = genotyped_only

    def score(self, tables: FhirTables, *, run_time: str) -> PatientScores:
        frame = iwpc_frame(tables)
        ok = applies(frame)
        out = PatientScores(skipped={str(p): "no warfarin indication, genotype or warfarin record"
                                     for p in frame.loc[~ok, "subject_id"]})
        if self.genotyped_only and ok.any():
            ok = route_by_genotype(frame, ok, out, keep_genotyped=True)
        if not ok.any():
            return out
        suggestions = self.dose_model.suggest(frame[ok])
        genotypes = tables.genotypes.groupby("patient_id")["observation_id"].unique()
        for s in suggestions.itertuples():
            pid = str(s.subject_id)
            factors = [f"{f['factor']} {f['value']} ({f['effect_mg_week']:+.1f} mg/week)" for f in s.top_factors]
            note = (f"90% prediction interval {s.interval90_low_mg_week:.1f}-{s.interval90_high_mg_week:.1f} mg/week. "
                    f"IWPC pharmacogenetic algorithm: {s.iwpc_pharmacogenetic_mg_week:.1f} mg/week.")
            if s.missing_inputs:
                note += f" Missing inputs (less reliable): {', '.join(s.missing_inputs)}."
            supporting = [f"Observation/{o}" for o in genotypes.get(pid, [])]
            out.results[pid] = [dose_proposal(
                pid, WARFARIN, float(s.dose_mg_week), "mg", self.model, per=(1, "wk"),
                interval=(s.interval80_low_mg_week, s.interval80_high_mg_week, 0.8), supporting=supporting,
                factors=factors, rid=str(uuid.uuid5(_NS, f"{self.name}|{pid}|{run_time}")), authored=run_time,
                note=note)]
        return out

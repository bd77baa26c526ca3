"""The real fusion tasks: where their data come from, their modalities, and the model settings (one place).

- ``warfarin``: IWPC-layout CSV or any FHIR source (through ``medmeta.fhir.iwpc_frame``) -> ``clinical`` +
  ``genotype`` -> stable weekly warfarin dose (mg/week). Real data (IWPC).
- ``diabetes``: any FHIR source -> ``demographics`` + ``labs`` + ``medications`` -> HbA1c (%). Trained and evaluated
  here on the Synthea records, which are synthetic: no model of it is shipped.

The settings (fusion layer, loss) were chosen on a cross-validation split other than the one reported in
benchmarks/results/fusion.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medmeta.errors import DataError
from medmeta.fusion.datasets import Paired, diabetes_data, warfarin_data
from medmeta.fusion.model import FusionModel

SETTINGS: dict[str, dict[str, Any]] = {
    "warfarin": {"fusion": "attention", "members": 5, "loss": "l1", "target_transform": "sqrt",
                 "target": "dose_mg_week", "unit": "mg/week"},
    "diabetes": {"fusion": "gated", "members": 5, "loss": "l1", "baseline": "labs.hba1c", "target": "hba1c",
                 "unit": "%"},
}
TASKS = tuple(SETTINGS)


def load(task: str, source: str | Path) -> Paired:
    """The task's paired data from ``source`` (warfarin: an IWPC-layout CSV or a FHIR source; diabetes: FHIR)."""
    if task not in SETTINGS:
        raise DataError(f"unknown task {task!r}; expected one of {TASKS}", field="task")
    path = Path(source)
    if task == "warfarin" and path.suffix.lower() == ".csv":
        from medmeta.datasets.warfarin import load_iwpc

        frame, rejected = load_iwpc(path)
        data = warfarin_data(frame)
        data.rejected = rejected + data.rejected
        return data
    from medmeta.fhir import iwpc_frame, read

    tables = read(source)
    data = warfarin_data(iwpc_frame(tables)) if task == "warfarin" else diabetes_data(tables)
    data.rejected = list(tables.rejected) + data.rejected
    return data


def model_for(task: str, data: Paired, *, seed: int = 0, **overrides: Any) -> FusionModel:
    """An untrained model of ``task`` with the task's settings (``overrides`` change some)."""
    return FusionModel(data.modalities, **{**SETTINGS[task], "seed": seed, **overrides})


def train(task: str, data: Paired, *, seed: int = 0, **overrides: Any) -> FusionModel:
    """The task's model trained on every example of ``data`` with a known target (deterministic for a seed)."""
    import numpy as np

    known = np.flatnonzero(np.isfinite(data.y))
    if not len(known):
        raise DataError(f"no example with a known {SETTINGS[task]['target']} to train on", field="target")
    data = data.subset(known)
    return model_for(task, data, seed=seed, **overrides).fit(data.x, data.y)


def baselines(task: str, data: Paired, model: FusionModel) -> dict[str, Any]:
    """The clinical reference predictions of ``task`` for every example of ``data``.

    warfarin: the IWPC clinical and pharmacogenetic algorithms; diabetes: the last HbA1c (the model's training
    mean where there is none).
    """
    import numpy as np

    if task == "warfarin":
        return {"iwpc_clinical": data.info["iwpc_clinical"].to_numpy(),
                "iwpc_pharmacogenetic": data.info["iwpc_pharmacogenetic"].to_numpy()}
    previous = data.info["previous_hba1c"].to_numpy(dtype=float)
    return {"last_value": np.where(np.isfinite(previous), previous, model.target_mean_)}


DESCRIPTIONS = {
    "warfarin": ("stable weekly warfarin dose (mg/week) from the clinical record and the pharmacogenetic genotype",
                 "clinical: the warfarin model's clinical features (age, height, weight, race, ethnicity, sex, "
                 "interacting drugs, indication, target INR, comorbidities, smoking, with missing-value flags); "
                 "genotype: CYP2C9 diplotype and the VKORC1 SNPs -1639, 497, 1173, 1542, 3730, 2255, 4451 as called "
                 "(no imputation; the network learns their linkage)"),
    "diabetes": ("the HbA1c value (%) at a measurement, from what was recorded before it",
                 "demographics: age, sex, race, ethnicity; labs: the last 8 HbA1c and glucose values and how long "
                 "ago they were measured; medications: diabetes treatment classes (active, years since start) "
                 "and the number of active orders. The training data were synthetic (Synthea)"),
}


def model_card(task: str, model: FusionModel, command: str) -> str:
    """A model card (README.md) from the trained model's settings, training summary and calibration."""
    what, inputs = DESCRIPTIONS[task]
    t = model.training_
    rows = [f"| {key.replace('+', ' + ')} | {entry['n']} | "
            + " | ".join(f"[{entry[str(c)][0]:+.3f}, {entry[str(c)][1]:+.3f}]" if str(c) in entry else "too few"
                         for c in model.coverage) + " |"
            for key, entry in model.calibration_.items()]
    levels = " | ".join(f"{round(c * 100)}% bounds" for c in model.coverage)
    return "\n".join([
        f"# Model card: {task} fusion model (`medmeta.fusion.FusionModel`)", "",
        "**Decision support for a clinician, not an order.** Research software, not for clinical use without review.",
        "",
        f"- **What it predicts**: {what}.",
        f"- **Inputs (modalities)**: {inputs}. Any subset of the modalities works; each prediction says which it "
        "used, their weights, and an interval calibrated for that set of modalities.",
        f"- **How**: {model.members} fusion networks ({model.fusion} fusion, embedding size {model.dim}), each trained "
        f"on all but one fold of the patients with modality dropout {model.modality_dropout} (L1 loss"
        + (f", target {model.target_transform}-transformed" if model.target_transform else "")
        + (f", correcting the baseline `{model.baseline}` where known" if model.baseline else "") + "); "
        "the prediction is their mean.",
        f"- **Trained on**: {t['patients']} patients/examples with a known target; modalities present: "
        + ", ".join(f"{k} {v}" for k, v in t["modalities_present"].items()) + ".",
        f"- **Reproduce** (deterministic on one CPU thread): `{command}`",
        "- **Evaluation**: benchmarks/results/fusion.md (patient-level cross-validation with CIs, each modality "
        f"alone vs fused); score it on other data with `medmeta fusion eval --task {task} --input SOURCE --json OUT`.",
        "- **Limits**: associations, not causal effects; a patient unlike the training patients (or a modality "
        "pattern rare in them) gets a less reliable prediction, and intervals are given only for sets of modalities "
        f"with at least {model.min_calibration} calibration patients.",
        "", "## Prediction intervals (split-conformal, out-of-fold, per set of modalities used)", "",
        (f"Bounds are added to the prediction on the {model.target_transform} scale of {model.unit or 'the target'}: "
         f"the interval is ({model.target_transform}⁻¹ of) {model.target_transform}(prediction) + low ... + high."
         if model.target_transform else f"Bounds are added to the prediction ({model.unit or 'target units'})."),
        "",
        f"| modalities used | calibration n | {levels} |", "|---|---|" + "---|" * len(model.coverage), *rows, "",
        "Files: `config.json` (settings, target scaling, calibration, training summary), `model.safetensors` "
        "(weights; loaded without executing code).", ""])

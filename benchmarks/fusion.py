"""Multimodal fusion on real paired data: each modality alone vs fused, patient-level CV, bootstrap CIs over patients.

    python benchmarks/fusion.py --data-dir ../shared/data          # both tasks, ~20 minutes on a shared 2-core machine
    python benchmarks/fusion.py --data-dir ../shared/data --task warfarin

Writes benchmarks/fusion.json and benchmarks/fusion.md.

- warfarin (IWPC): clinical record + genotype (CYP2C9 and VKORC1 markers), stable weekly dose; reported on patients
  with a complete genotype, an incomplete one, and none; the IWPC algorithms and the shipped warfarin model
  (re-trained in the same folds) beside them.
- diabetes (Synthea FHIR records, synthetic): demographics + laboratory histories + medications -> the HbA1c
  value at each measurement, from what was recorded before it; the last value and the population mean beside them.

The fused configuration of each task (fusion layer; L1 loss because the metric is the MAE) was chosen on another
split (seed 1); this run uses split seed 0. All three fusion layers are reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from medmeta.fusion.datasets import diabetes_data, warfarin_data
from medmeta.fusion.evaluation import cross_validate, grouped_scores
from medmeta.paths import data_dir

HERE = Path(__file__).resolve().parent
COMMON = {"members": 5, "loss": "l1", "seed": 0}
WARFARIN = {**COMMON, "target_transform": "sqrt"}
WARFARIN_FUSED = "fused_attention"  # chosen on split seed 1
DIABETES_FUSED = "fused_gated"  # chosen on split seed 1


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def warfarin(data_dir: Path, folds: int, n_boot: int) -> dict:
    from medmeta.datasets.warfarin import load_iwpc
    from medmeta.treatment.iwpc import iwpc_clinical_dose, iwpc_pharmacogenetic_dose
    from medmeta.treatment.warfarin import WarfarinDoseModel

    frame, rejected = load_iwpc(data_dir / "iwpc_warfarin" / "warfarin.csv")
    data = warfarin_data(frame)
    both = ["clinical", "genotype"]
    candidates = {
        "clinical_only": {"modalities": ["clinical"], **WARFARIN},
        "genotype_only": {"modalities": ["genotype"], **WARFARIN},
        "fused_attention": {"modalities": both, "fusion": "attention", **WARFARIN},
        "fused_gated": {"modalities": both, "fusion": "gated", **WARFARIN},
        "fused_late": {"modalities": both, "fusion": "late", **WARFARIN},
    }
    cv = cross_validate(data, candidates, folds=folds, seed=0,
                        withhold={f"{WARFARIN_FUSED}_genotype_withheld": (WARFARIN_FUSED, "genotype")},
                        progress=lambda m: log(f"warfarin fusion CV: {m}"))
    idx = cv["index"]
    dosed, info = frame.iloc[idx].reset_index(drop=True), data.info.iloc[idx].reset_index(drop=True)
    y = data.y[idx]
    predictions = dict(cv["predictions"])
    predictions["iwpc_clinical"] = iwpc_clinical_dose(dosed)
    predictions["iwpc_pharmacogenetic"] = iwpc_pharmacogenetic_dose(dosed)
    shipped = np.empty(len(dosed))
    start = time.monotonic()
    for k in range(folds):  # the shipped model's recipe, re-trained on the same training folds
        train, test = cv["fold"] != k, cv["fold"] == k
        shipped[test] = WarfarinDoseModel().fit(dosed[train]).predict(dosed[test])
    log(f"warfarin dose model CV done ({time.monotonic() - start:.0f} s)")
    predictions["warfarin_dose_model"] = shipped
    status = info["genotype"].to_numpy()
    groups = {"all": np.ones(len(y), dtype=bool), "genotype complete": status == "complete",
              "genotype incomplete (partial or none)": status != "complete", "genotype none": status == "none"}
    tables = grouped_scores(y, predictions, info["subject_id"].to_numpy(), groups, metrics=("mae", "within20"),
                            references=("clinical_only", "genotype_only", "iwpc_pharmacogenetic"), n_boot=n_boot)
    return {
        "data": "IWPC warfarin (shared/data/iwpc_warfarin/warfarin.csv), patients with a therapeutic dose",
        "patients": len(y), "rows_rejected_by_loader": len(rejected),
        "genotype_values_not_interpretable": len(data.rejected),
        "modalities_present": {n: int(data.x.mask[n][idx].sum()) for n in data.x.names},
        "group_sizes": {g: int(m.sum()) for g, m in groups.items()},
        "fallback_to_training_mean": {k: int(v.sum()) for k, v in cv["fallback"].items() if v.any()},
        "fused": WARFARIN_FUSED, "settings": candidates,
        "protocol": f"patient-level {folds}-fold CV (split seed 0); 95% bootstrap CIs over patients ({n_boot} "
                    "resamples); differences are paired (same resampled patients)",
        "groups": tables, "seconds": cv["seconds"],
    }


def diabetes(data_dir: Path, folds: int, n_boot: int) -> dict:
    from medmeta.fhir import read

    tables_in = read(data_dir / "synthea_fhir_r4" / "bundles")
    data = diabetes_data(tables_in)
    everything = ["demographics", "labs", "medications"]
    base = {**COMMON}
    candidates = {
        "demographics_only": {"modalities": ["demographics"], **base},
        "labs_only": {"modalities": ["labs"], "baseline": "labs.hba1c", **base},
        "medications_only": {"modalities": ["medications"], **base},
        "fused_gated": {"modalities": everything, "fusion": "gated", "baseline": "labs.hba1c", **base},
        "fused_attention": {"modalities": everything, "fusion": "attention", "baseline": "labs.hba1c", **base},
        "fused_late": {"modalities": everything, "fusion": "late", "baseline": "labs.hba1c", **base},
    }
    cv = cross_validate(data, candidates, folds=folds, seed=0,
                        withhold={f"{DIABETES_FUSED}_labs_withheld": (DIABETES_FUSED, "labs"),
                                  f"{DIABETES_FUSED}_medications_withheld": (DIABETES_FUSED, "medications")},
                        progress=lambda m: log(f"diabetes fusion CV: {m}"))
    idx = cv["index"]
    info, y = data.info.iloc[idx].reset_index(drop=True), data.y[idx]
    predictions = dict(cv["predictions"])
    mean = np.empty(len(y))
    for k in range(folds):
        mean[cv["fold"] == k] = y[cv["fold"] != k].mean()
    previous = info["previous_hba1c"].to_numpy()
    predictions["last_value"] = np.where(np.isfinite(previous), previous, mean)
    predictions["population_mean"] = mean
    mask = {n: data.x.mask[n][idx] for n in data.x.names}
    diabetic = info["diabetes"].to_numpy(dtype=bool)
    groups = {"all": np.ones(len(y), dtype=bool), "with lab history": mask["labs"],
              "without lab history (first HbA1c)": ~mask["labs"], "with medication history": mask["medications"],
              "without medication history": ~mask["medications"], "diabetes, with lab history": diabetic & mask["labs"],
              "no diabetes, with lab history": ~diabetic & mask["labs"]}
    tables = grouped_scores(y, predictions, info["patient_id"].to_numpy(), groups, metrics=("mae", "rmse"),
                            references=("labs_only", "medications_only", "demographics_only", "last_value"),
                            n_boot=n_boot)
    return {
        "data": "Synthea FHIR R4 bundles (shared/data/synthea_fhir_r4, 200 patients): SYNTHETIC records; "
                "associations are not causal effects",
        "examples": len(y), "patients": len(np.unique(info["patient_id"])),
        "fhir_resources_rejected_by_reader": int(sum(tables_in.counts.rejected.values())),
        "modalities_present": {n: int(m.sum()) for n, m in mask.items()},
        "group_sizes": {g: int(m.sum()) for g, m in groups.items()},
        "fallback_to_training_mean": {k: int(v.sum()) for k, v in cv["fallback"].items() if v.any()},
        "fused": DIABETES_FUSED, "settings": candidates,
        "last_value": "the previous HbA1c; the training folds' mean where there is none",
        "protocol": f"patient-level {folds}-fold CV (split seed 0; all of a patient's measurements in one fold); "
                    f"95% bootstrap CIs over patients ({n_boot} resamples, a patient's measurements together); "
                    "differences are paired",
        "groups": tables, "seconds": cv["seconds"],
    }


# -- report ------------------------------------------------------------------------------------------------------
def _fmt(entry: dict, scale: float = 1.0, digits: int = 2) -> str:
    v, (lo, hi) = entry["value"], entry["ci95"]
    return f"{v * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def _verdict(table: dict, fused: str, singles: list[str], metric: str) -> str:
    best = min(singles, key=lambda s: table[s][metric]["value"])
    diff = table[fused][f"{metric}_minus_{best}"]
    lo, hi = diff["ci95"]
    word = ("better" if hi < 0 else "worse" if lo > 0 else
            "not significantly different (point estimate better)" if diff["value"] <= 0 else
            "not significantly different (point estimate WORSE)")
    return f"best single modality: {best}; fused minus it: {_fmt(diff, digits=3)} -> {word}"


def report(results: dict, command: str, machine: str) -> str:
    lines = ["# Multimodal fusion on real paired data", "",
             f"Command: `{command}`  ", f"Machine: {machine} (shared with other jobs; times are indicative)  ",
             f"Date: {results['date']}; medmeta commit {results['commit']}", "",
             "Decision support research, not for clinical use. Each modality alone and fused use the same "
             "estimator (`medmeta.fusion.FusionModel`, 5 cross-fitted members, L1 loss, modality dropout 0.3) and the "
             "same folds; CIs are 95% bootstrap over patients; differences are paired.", ""]
    if "warfarin" in results:
        w = results["warfarin"]
        lines += ["## Warfarin (IWPC): clinical record + genotype -> stable weekly dose (mg/week)", "",
                  f"{w['patients']} dosed patients; {w['protocol']}. Group sizes: "
                  + ", ".join(f"{g} {n}" for g, n in w["group_sizes"].items()) + ". "
                  f"Fused = `{w['fused']}` (chosen on split seed 1). `genotype_only` has no input for patients "
                  f"without any genotype and predicts the training mean for them "
                  f"({w['fallback_to_training_mean'].get('genotype_only', 0)} patients).", ""]
        for group, table in w["groups"].items():
            lines += [f"### {group} (n = {next(iter(table.values()))['n']})", "",
                      "| method | MAE | within 20% | MAE minus clinical-only | MAE minus genotype-only | "
                      "MAE minus IWPC PGx |", "|---|---|---|---|---|---|"]
            for method, e in table.items():
                cells = [_fmt(e["mae"]), _fmt(e["within20"], digits=1)]
                cells += [_fmt(e[k], digits=2) if k in e else "—" for k in
                          ("mae_minus_clinical_only", "mae_minus_genotype_only", "mae_minus_iwpc_pharmacogenetic")]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines += ["", "Requirement (fused not worse than the best single modality): "
                      + _verdict(table, w["fused"], ["clinical_only", "genotype_only"], "mae"), ""]
    if "diabetes" in results:
        d = results["diabetes"]
        lines += ["## Diabetes (Synthea FHIR, SYNTHETIC): demographics + lab histories + medications -> HbA1c (%)", "",
                  f"**The data are synthetic (Synthea); associations are not causal effects.** {d['examples']} HbA1c "
                  f"measurements of {d['patients']} patients; {d['protocol']}. Group sizes: "
                  + ", ".join(f"{g} {n}" for g, n in d["group_sizes"].items()) + ". "
                  f"Fused = `{d['fused']}` (chosen on split seed 1). `last_value`: {d['last_value']}.", ""]
        for group, table in d["groups"].items():
            lines += [f"### {group} (n = {next(iter(table.values()))['n']} measurements, "
                      f"{next(iter(table.values()))['patients']} patients)", "",
                      "| method | MAE | RMSE | MAE minus labs-only | MAE minus medications-only | "
                      "MAE minus demographics-only | MAE minus last value |", "|---|---|---|---|---|---|---|"]
            for method, e in table.items():
                cells = [_fmt(e["mae"], digits=3), _fmt(e["rmse"], digits=3)]
                cells += [_fmt(e[k], digits=3) if k in e else "—" for k in
                          ("mae_minus_labs_only", "mae_minus_medications_only", "mae_minus_demographics_only",
                           "mae_minus_last_value")]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines += ["", "Requirement (fused not worse than the best single modality): "
                      + _verdict(table, d["fused"], ["labs_only", "medications_only", "demographics_only"], "mae")
                      + "; against the last value: " + _fmt(table[d["fused"]]["mae_minus_last_value"], digits=3), ""]
    lines += ["## Imaging + EHR", "",
              "No data set here has images and records of the same patients, so **no accuracy is claimed** for "
              "image + EHR fusion; tests/test_fusion.py checks its wiring (shapes, masks, missing image, missing EHR, "
              "both missing -> a clear error)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="The data root (default: MEDMETA_DATA).")
    parser.add_argument("--task", choices=("all", "warfarin", "diabetes"), default="all")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=HERE / "fusion")
    args = parser.parse_args()
    torch.set_num_threads(1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    results: dict = {"date": time.strftime("%Y-%m-%d"), "commit": commit}
    root = data_dir(args.data_dir)
    if args.task in ("all", "warfarin"):
        results["warfarin"] = warfarin(root, args.folds, args.bootstrap)
    if args.task in ("all", "diabetes"):
        results["diabetes"] = diabetes(root, args.folds, args.bootstrap)
    command = "python benchmarks/fusion.py " + " ".join(sys.argv[1:])
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, 1 thread"
    results.update({"command": command, "machine": machine})
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(report(results, command, machine))
    log(f"wrote {args.out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()

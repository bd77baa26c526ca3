"""Federated vs central vs purely local meta-learning, scored on the same held-out subjects and patients.

Glucose (the 19 Hall et al. CGM subjects, 30 minutes ahead): 4 folds by subject. In each fold the other
subjects' data trains (a) the central model (``GlucoseForecaster.fit`` on their pooled series), (b) the federated
one (Flower simulation, one client per subject, Per-FedAvg) and (c) one local model per subject, trained on that
subject alone; every model is adapted to each held-out subject's first 24 h and scored on its later readings.
Baselines on the same points: persistence, the population AR model of the training subjects, and the held-out
subject's own AR model fitted on its first 24 h (its purely local model).

Warfarin (IWPC, dosed patients): patient-level 5-fold cross-validation. In each fold the training patients train
(a) the central ``WarfarinDoseModel``, (b) the federated one with one client per race (and, separately, per
indication group), (c) one local model per client, trained on that group alone; held-out patients are scored
at k = 0 (no adaptation), with the IWPC pharmacogenetic algorithm on the same patients. Differential privacy
(server-side clipping and Gaussian noise) is measured on the race clients.

"Accuracy" relative to the central model: RMSE_central / RMSE (glucose) and MAE_central / MAE (warfarin), so 1 is
"as accurate as central"; and, stricter, the share of the central model's gain over where training starts
(persistence for glucose, the IWPC formula for warfarin) that the federated model has reached. Rounds to reach
95% of each are read off the federated model's held-out error after every round.

    .venv/bin/python benchmarks/federated.py --data-dir ../shared/data [--tasks cgm warfarin]

Writes benchmarks/federated.json and .md (or ``--output``). docs/federated.md has the runs made, their commands and
times (28 and 21 minutes for the two it shows, on 2 shared CPU cores).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medmeta.datasets.cgm import load_cgm
from medmeta.datasets.warfarin import load_iwpc
from medmeta.errors import DataError
from medmeta.federated.settings import FederatedSettings
from medmeta.federated.simulation import simulate
from medmeta.paths import CGM_HALL_CSV, WARFARIN_CSV, data_path
from medmeta.stats import bootstrap_ci
from medmeta.treatment.glucose import ARForecaster, GlucoseForecaster
from medmeta.treatment.glucose_eval import subject_forecasts
from medmeta.treatment.iwpc import iwpc_pharmacogenetic_dose, race_category
from medmeta.treatment.warfarin import WarfarinDoseModel
from medmeta.treatment.warfarin_eval import dosed, mae, within20
from medmeta.treatment.warfarin_features import indication_group

HERE = Path(__file__).resolve().parent
SPLIT_SEED = 2026
HORIZON = 30
TARGET = 0.95
N_BOOT = 2000


def csv_subset(source: Path, target: Path, column: str, keep: set[str]) -> Path:
    """The rows of ``source`` whose ``column`` is in ``keep``, in the same layout: the training clients' files."""
    with source.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        i = header.index(column)
        rows = [row for row in reader if len(row) > i and row[i].strip() in keep]
    with target.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return target


def ci(statistic: Callable[..., float], *arrays: np.ndarray) -> dict[str, Any]:
    value, low, high = bootstrap_ci(statistic, *arrays, n_resamples=N_BOOT)
    return {"value": round(value, 3), "ci95": [round(low, 3), round(high, 3)]}


def first_round(values: list[float] | None, target: float = TARGET) -> int | None:
    return None if values is None else next((r for r, v in enumerate(values) if v >= target), None)


def share_of_gain(curve: list[float], start: float, central: float) -> list[float] | None:
    """How much of the central model's improvement on ``start`` each error in ``curve`` has made (None when the
    central model does not improve on the starting point)."""
    return [(start - e) / (start - central) for e in curve] if start > central else None


def curve_summary(name: str, curve: list[float], central: float, start: float) -> dict[str, Any]:
    """The federated model's held-out error after each round, relative to central, and the rounds to 95%."""
    relative = [central / e for e in curve]
    gain = share_of_gain(curve, start, central)
    return {name: [round(e, 3) for e in curve], "relative": [round(x, 4) for x in relative],
            "share_of_gain": gain and [round(x, 4) for x in gain], "rounds_to_95_relative": first_round(relative),
            "rounds_to_95_of_gain": first_round(gain)}


def traffic(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Payload bytes per client (Flower's serialisation), averaged over the runs' rounds."""
    rounds = [r for rep in reports for r in rep["rounds"]]
    up = float(np.mean([r["bytes_from_client"] for r in rounds if r["replied"]]))
    down = float(np.mean([r["bytes_to_client"] for r in rounds]))
    stats = [rep["statistics"] for rep in reports]
    calib = [rep["calibration"] for rep in reports if rep.get("calibration")]
    once = float(np.mean([s["bytes_to_client"] + s["bytes_from_client_max"] for s in stats + calib]))
    n_rounds = len(reports[0]["rounds"])
    return {"bytes_sent_per_client_per_round": round(up), "bytes_received_per_client_per_round": round(down),
            "bytes_per_client_whole_run": round(n_rounds * (up + down) + once * (1 + bool(calib))),
            "seconds_per_round": round(float(np.mean([r["seconds"] for r in rounds])), 2),
            "update_norm_median_by_round": [round(float(np.median([rep["rounds"][i]["update_norm_median"]
                                                                   for rep in reports])), 4)
                                            for i in range(n_rounds)]}


# -- glucose -------------------------------------------------------------------------------------------
def glucose(path: Path, folds: int, rounds: int, local_steps: int, workers: int, tmp: Path) -> dict[str, Any]:
    series, _ = load_cgm(path)
    ids = sorted(series)
    fold_of = {sid: i % folds for i, sid in enumerate(np.random.default_rng(SPLIT_SEED).permutation(ids))}
    local_models: dict[str, GlucoseForecaster] = {}
    subjects: dict[str, dict[str, Any]] = {}
    reports = []
    start = time.monotonic()
    for k in range(folds):
        test = [s for s in ids if fold_of[s] == k]
        train = [s for s in ids if fold_of[s] != k]
        base = GlucoseForecaster()
        points = {s: base.points(series[s]) for s in test}
        population = ARForecaster().fit([base.points(series[s]) for s in train])

        def forecast(model: GlucoseForecaster, sid: str, population: ARForecaster = population,
                     points: dict = points) -> tuple:
            return subject_forecasts(model, points[sid], adapt_hours=24, horizon=HORIZON, population=population)

        central = GlucoseForecaster().fit([series[s] for s in train])
        for s in test:
            f, y, _ = forecast(central, s)
            subjects[s] = {"fold": k, "y": y, "central": f["medmeta"], "persistence": f["persistence"],
                           "population_ar": f["population"], "own_24h_ar": f["per_subject"], "rounds": [],
                           "local": {}}
        data = csv_subset(path, tmp / f"cgm_train_{k}.csv", "id", set(train))
        settings = FederatedSettings(task="cgm", data=str(data), output=str(tmp / f"cgm_model_{k}"), rounds=rounds,
                                     local_steps=local_steps)

        def on_round(r: int, model: GlucoseForecaster, test: list[str] = test) -> None:
            for s in test:
                subjects[s]["rounds"].append(forecast(model, s)[0]["medmeta"])

        reports.append(simulate(settings, on_round=on_round, workers=workers))
        for c in train:
            if c not in local_models:
                local_models[c] = GlucoseForecaster().fit([series[c]])
            for s in test:
                subjects[s]["local"][c] = forecast(local_models[c], s)[0]["medmeta"]
        print(f"glucose fold {k + 1}/{folds} done ({time.monotonic() - start:.0f} s)", flush=True)

    def sse(method: str) -> np.ndarray:
        return np.array([np.sum((v[method] - v["y"]) ** 2) for v in subjects.values()])

    n = np.array([len(v["y"]) for v in subjects.values()], dtype=float)
    for v in subjects.values():
        v["federated"] = v["rounds"][-1]
    local_sse = np.array([np.mean([np.sum((p - v["y"]) ** 2) for p in v["local"].values()])
                          for v in subjects.values()])
    errors = {m: sse(m) for m in ("central", "federated", "persistence", "population_ar", "own_24h_ar")}
    errors["local_mean_client"] = local_sse

    def rmse(e: np.ndarray, n: np.ndarray) -> float:
        return float(np.sqrt(e.sum() / n.sum()))

    methods = {m: ci(rmse, e, n) for m, e in errors.items()}
    diffs = {m: ci(lambda a, b, n: rmse(a, n) - rmse(b, n), errors[m], errors["central"], n)
             for m in errors if m != "central"}
    per_client = [float(np.sqrt(sum(np.sum((v["local"][c] - v["y"]) ** 2) for v in subjects.values()
                                    if c in v["local"] and v["fold"] == k)
                                / sum(len(v["y"]) for v in subjects.values() if c in v["local"] and v["fold"] == k)))
                  for k in range(folds) for c in ids if fold_of[c] != k]
    curve = [rmse(np.array([np.sum((v["rounds"][r] - v["y"]) ** 2) for v in subjects.values()]), n)
             for r in range(rounds + 1)]
    by_fold = []
    for k in range(folds):
        idx = np.array([v["fold"] == k for v in subjects.values()])
        c_k = rmse(errors["central"][idx], n[idx])
        p_k = rmse(errors["persistence"][idx], n[idx])
        curve_k = [rmse(np.array([np.sum((v["rounds"][r] - v["y"]) ** 2) for v in subjects.values()
                                  if v["fold"] == k]), n[idx]) for r in range(rounds + 1)]
        by_fold.append({"fold": k, "subjects": int(idx.sum()), "central_rmse": round(c_k, 3),
                        "federated_rmse": round(curve_k[-1], 3),
                        "rounds_to_95_relative": first_round([c_k / e for e in curve_k]),
                        "rounds_to_95_of_gain": first_round(share_of_gain(curve_k, p_k, c_k))})
    better = sum(np.sum((v["federated"] - v["y"]) ** 2) <= np.sum((v["central"] - v["y"]) ** 2)
                 for v in subjects.values())
    return {"protocol": f"{folds} folds by subject (seed {SPLIT_SEED}); adapt on the first 24 h, score {HORIZON} min "
                        "ahead on the later readings; CIs: bootstrap over held-out subjects",
            "subjects": len(subjects), "points": int(n.sum()), "rmse": methods, "rmse_minus_central": diffs,
            "local_per_client_rmse": {"mean": round(float(np.mean(per_client)), 3),
                                      "min": round(min(per_client), 3), "max": round(max(per_client), 3),
                                      "models": len(per_client)},
            "federated_at_most_central_subjects": int(better),
            "rounds": {**curve_summary("federated_rmse", curve, methods["central"]["value"],
                                       methods["persistence"]["value"]), "by_fold": by_fold},
            "traffic": traffic(reports), "clients_per_fold": [r["clients"] for r in reports],
            "seconds": round(time.monotonic() - start)}


# -- warfarin ------------------------------------------------------------------------------------------
def warfarin(path: Path, folds: int, rounds: int, local_steps: int, workers: int, tmp: Path,
             partitions: tuple[str, ...], dp_noise: tuple[float, ...]) -> dict[str, Any]:
    frame, _ = load_iwpc(path)
    patients = dosed(frame)
    y = patients["dose_mg_week"].astype(float).to_numpy()
    fold = np.random.default_rng(SPLIT_SEED).permutation(len(patients)) % folds
    label = {"race": race_category(patients).to_numpy(), "indication": indication_group(patients).to_numpy()}
    preds: dict[str, np.ndarray] = {"iwpc_pharmacogenetic": iwpc_pharmacogenetic_dose(patients)}
    curves = {by: np.full((rounds + 1, len(patients)), np.nan) for by in partitions}
    local_each: dict[str, list[float]] = {by: [] for by in partitions}
    reports: dict[str, list[dict]] = {by: [] for by in partitions}
    dp_reports: dict[float, list[dict]] = {s: [] for s in dp_noise}
    clip = None
    start = time.monotonic()

    def put(name: str, idx: np.ndarray, values: np.ndarray) -> None:
        preds.setdefault(name, np.full(len(patients), np.nan))[idx] = values

    for k in range(folds):
        test_idx = np.flatnonzero(fold == k)
        train, test = patients[fold != k].reset_index(drop=True), patients.iloc[test_idx].reset_index(drop=True)
        put("central", test_idx, WarfarinDoseModel().fit(train).predict(test))
        data = csv_subset(path, tmp / f"warfarin_train_{k}.csv", "PharmGKB Subject ID", set(train["subject_id"]))
        for by in partitions:
            settings = FederatedSettings(task="warfarin", data=str(data), output=str(tmp / f"warfarin_{by}_{k}"),
                                         rounds=rounds, local_steps=local_steps, partition_by=by)

            def on_round(r: int, model: WarfarinDoseModel, by: str = by, idx: np.ndarray = test_idx,
                         test: pd.DataFrame = test) -> None:
                curves[by][r, idx] = model.predict(test)

            reports[by].append(simulate(settings, on_round=on_round, workers=workers))
            put(f"federated_{by}", test_idx, curves[by][rounds, test_idx])
            train_label, test_label = label[by][fold != k], label[by][test_idx]
            own = np.full(len(test), np.nan)
            for g in np.unique(train_label):
                try:
                    local = WarfarinDoseModel().fit(train[train_label == g].reset_index(drop=True))
                except DataError:  # too few patients for a model of their own (small files only)
                    continue
                everyone = local.predict(test)
                local_each[by].append(mae(y[test_idx], everyone))
                own[test_label == g] = everyone[test_label == g]
            put(f"local_own_group_{by}", test_idx, own)
        if dp_noise and "race" in partitions:
            # clip at the median size of a client's update without DP (first round of the first fold)
            clip = clip or reports["race"][0]["rounds"][0]["update_norm_median"]
            for sigma in dp_noise:
                settings = FederatedSettings(task="warfarin", data=str(data), output=str(tmp / f"warfarin_dp_{k}"),
                                             rounds=rounds, local_steps=local_steps, dp_clip=clip, dp_noise=sigma)
                dp_reports[sigma].append(simulate(settings, workers=workers))
                put(f"federated_race_dp_noise_{sigma:g}", test_idx,
                    WarfarinDoseModel.load(dp_reports[sigma][-1]["model"]).predict(test))
        print(f"warfarin fold {k + 1}/{folds} done ({time.monotonic() - start:.0f} s)", flush=True)

    methods = {}
    for m, p in preds.items():  # a method without a prediction for some patients is scored on the others
        ok = ~np.isnan(p)
        methods[m] = {"n": int(ok.sum()), "mae": ci(mae, y[ok], p[ok]), "within20": ci(within20, y[ok], p[ok])}
        if m != "central":
            methods[m]["mae_minus_central"] = ci(lambda a, b, c: mae(a, b) - mae(a, c), y[ok], p[ok],
                                                 preds["central"][ok])
            methods[m]["within20_minus_central"] = ci(lambda a, b, c: within20(a, b) - within20(a, c), y[ok], p[ok],
                                                      preds["central"][ok])
    central, iwpc = methods["central"]["mae"]["value"], methods["iwpc_pharmacogenetic"]["mae"]["value"]
    out: dict[str, Any] = {"protocol": f"patient-level {folds}-fold cross-validation (seed {SPLIT_SEED}), k = 0; CIs: "
                                       "bootstrap over patients, differences paired",
                           "patients": len(patients), "methods": methods, "partitions": {}}
    for by in partitions:
        curve = [mae(y, c) for c in curves[by]]
        by_race = {g: {m: round(mae(y[in_g & ok], preds[m][in_g & ok]), 3) if (in_g & ok).any() else None
                       for m in ("central", f"federated_{by}", f"local_own_group_{by}", "iwpc_pharmacogenetic")
                       for ok in [~np.isnan(preds[m])]}
                   for g in sorted(set(label["race"])) for in_g in [label["race"] == g]}
        out["partitions"][by] = {
            "clients_per_fold": [r["clients"] for r in reports[by]],
            "local_each_client_on_all_patients_mae": {"mean": round(float(np.mean(local_each[by])), 3),
                                                      "min": round(min(local_each[by]), 3),
                                                      "max": round(max(local_each[by]), 3),
                                                      "models": len(local_each[by])},
            "mae_by_race": by_race,
            "rounds": curve_summary("federated_mae", curve, central, iwpc),
            "traffic": traffic(reports[by])}
    if dp_noise and "race" in partitions:
        n_clients = reports["race"][0]["clients"]
        out["differential_privacy"] = {
            "clip": clip, "clients": n_clients, "rounds": rounds,
            "levels": {f"{s:g}": {"noise_std_on_average": round(s * clip / n_clients, 5),
                                  "epsilon_at_delta_1e-5": round(gaussian_rdp_epsilon(s, rounds, 1e-5), 1),
                                  "mae": methods[f"federated_race_dp_noise_{s:g}"]["mae"]}
                       for s in dp_noise}}
    out["seconds"] = round(time.monotonic() - start)
    return out


def gaussian_rdp_epsilon(sigma: float, releases: int, delta: float) -> float:
    """Client-level epsilon of ``releases`` Gaussian releases with noise multiplier ``sigma`` (every client in
    every round, so no sampling amplification): Renyi DP of order a is a * releases / (2 sigma^2) (Mironov 2017),
    converted with eps = rdp + log(1/delta) / (a - 1), minimised over a."""
    orders = np.concatenate([np.linspace(1.01, 10, 200), np.linspace(10, 1000, 1000)])
    return float(np.min(orders * releases / (2 * sigma**2) + math.log(1 / delta) / (orders - 1)))


# -- report --------------------------------------------------------------------------------------------
def fmt(e: dict[str, Any]) -> str:
    lo, hi = e["ci95"]
    return f"{e['value']:.2f} [{lo:.2f}, {hi:.2f}]"


def traffic_rows(name: str, t: dict[str, Any]) -> str:
    return (f"| {name} | {t['bytes_sent_per_client_per_round'] / 1024:.1f} | "
            f"{t['bytes_received_per_client_per_round'] / 1024:.1f} | {t['bytes_per_client_whole_run'] / 1024:.0f} | "
            f"{t['seconds_per_round']:.1f} |")


def markdown(r: dict[str, Any]) -> str:
    out = ["# Federated meta-learning (Flower, Per-FedAvg) vs central vs local, on the same held-out data", "",
           f"Command: `{r['command']}`  ", f"Machine: {r['machine']} (shared with other jobs; times are indicative).  ",
           f"Settings: {r['settings']}.  ", f"Total time: {r['seconds']:.0f} s.", "",
           "Accuracy relative to central = central error / error (1 = as accurate as the centrally trained model); "
           "share of gain = how much of the central model's improvement over the starting point (persistence for "
           "glucose, the IWPC pharmacogenetic formula for warfarin) the federated model has made. Rounds are counted "
           "after each round of the federated run (0 = the initial model). Bytes: payload of Flower's messages as "
           "serialised for transport (arrays as .npy), without HTTP framing; identical arrays in one message are "
           "sent once (Flower deduplicates objects). Forecasts and doses are decision support, not orders.", ""]
    if "cgm" in r:
        g = r["cgm"]
        out += ["## Glucose (Hall et al. 2018 CGM, 30 minutes ahead)", "", f"Protocol: {g['protocol']}. "
                f"{g['subjects']} held-out subjects, {g['points']} forecast points; clients per fold: "
                f"{g['clients_per_fold']}.", "",
                "| method | RMSE mg/dL [95% CI] | RMSE − central [95% CI] |", "|---|---|---|"]
        names = {"central": "central meta-training (pooled data)", "federated": "federated (Per-FedAvg, Flower)",
                 "local_mean_client": "local: one client's model alone (mean over clients)",
                 "own_24h_ar": "own data only: AR on the subject's first 24 h", "population_ar": "population AR",
                 "persistence": "persistence"}
        for m, name in names.items():
            d = g["rmse_minus_central"].get(m)
            out.append(f"| {name} | {fmt(g['rmse'][m])} | {fmt(d) if d else ''} |")
        lc = g["local_per_client_rmse"]
        out += ["", f"Local models, each on its fold's held-out subjects: mean RMSE {lc['mean']:.2f}, best "
                f"{lc['min']:.2f}, worst {lc['max']:.2f} ({lc['models']} client-fold models). The federated model's "
                f"RMSE is at most the central one's for {g['federated_at_most_central_subjects']} of {g['subjects']} "
                "subjects.", ""]
        out += rounds_section(g["rounds"], "RMSE", g["rmse"]["central"]["value"])
        out += ["| fold | subjects | central RMSE | federated RMSE | rounds to 95% (relative) | rounds to 95% of "
                "gain |", "|---|---|---|---|---|---|"]
        out += [f"| {f['fold']} | {f['subjects']} | {f['central_rmse']:.2f} | {f['federated_rmse']:.2f} | "
                f"{f['rounds_to_95_relative']} | {f['rounds_to_95_of_gain']} |" for f in g["rounds"]["by_fold"]]
        out += ["", "| clients | KiB sent per client per round | KiB received per client per round | KiB per client, "
                "whole run | seconds per round (simulation) |", "|---|---|---|---|---|",
                traffic_rows("one per subject", g["traffic"]), ""]
    if "warfarin" in r:
        w = r["warfarin"]
        out += ["## Warfarin (IWPC, weekly dose)", "", f"Protocol: {w['protocol']}. {w['patients']} patients.", "",
                "| method | n | MAE mg/week [95% CI] | within 20% [95% CI] | MAE − central | within 20% − central |",
                "|---|---|---|---|---|---|"]
        for m, e in w["methods"].items():
            dm, dw = e.get("mae_minus_central"), e.get("within20_minus_central")
            out.append(f"| {m} | {e['n']} | {fmt(e['mae'])} | {fmt(e['within20'])} | {fmt(dm) if dm else ''} | "
                       f"{fmt(dw) if dw else ''} |")
        out.append("")
        for by, p in w["partitions"].items():
            lc = p["local_each_client_on_all_patients_mae"]
            out += [f"### Clients by {by} (clients per fold: {p['clients_per_fold']})", "",
                    f"Each client's local model on all held-out patients: MAE mean {lc['mean']:.2f}, best "
                    f"{lc['min']:.2f}, worst {lc['max']:.2f} ({lc['models']} client-fold models). "
                    f"`local_own_group_{by}` scores each held-out patient with their own group's local model.", "",
                    "| race | " + " | ".join(next(iter(p["mae_by_race"].values()))) + " |",
                    "|---|" + "---|" * len(next(iter(p["mae_by_race"].values())))]
            out += [f"| {g} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in row.values()) + " |"
                    for g, row in p["mae_by_race"].items()]
            out += ["", *rounds_section(p["rounds"], "MAE", w["methods"]["central"]["mae"]["value"])]
            out += ["| clients | KiB sent per client per round | KiB received per client per round | KiB per "
                    "client, whole run | seconds per round (simulation) |", "|---|---|---|---|---|",
                    traffic_rows(f"one per {by}", p["traffic"]), ""]
        if "differential_privacy" in w:
            d = w["differential_privacy"]
            out += ["### Differential privacy (race clients)", "",
                    f"Server-side fixed clipping at {d['clip']:.4f} (the median client update of round 1 without DP) "
                    f"and Gaussian noise on the average of {d['clients']} equally weighted clients, {d['rounds']} "
                    "rounds. Epsilon is client-level (a whole hospital in or out), without sampling amplification, "
                    "against anyone who sees the released model (not against the server, which sees the updates).",
                    "", "| noise multiplier | noise std on the average | epsilon (delta 1e-5) | MAE [95% CI] |",
                    "|---|---|---|---|"]
            out += [f"| {s} | {v['noise_std_on_average']:.5f} | {v['epsilon_at_delta_1e-5']} | {fmt(v['mae'])} |"
                    for s, v in d["levels"].items()]
            out.append("")
    return "\n".join(out) + "\n"


def rounds_section(rounds: dict[str, Any], metric: str, central: float) -> list[str]:
    key = next(k for k in rounds if k.startswith("federated_"))
    rows = [f"Federated {metric} after each round (central {central:.2f}): "
            + ", ".join(f"{r}: {e:.2f}" for r, e in enumerate(rounds[key])) + ".", "",
            f"Rounds to reach 95% of the central model's accuracy: **{rounds['rounds_to_95_relative']}** "
            f"(central {metric} / federated {metric} >= 0.95); to reach 95% of its gain over the starting point: "
            f"**{rounds['rounds_to_95_of_gain']}** (None: not within the run, or the central model does not improve on "
            "the starting point).", ""]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--tasks", nargs="+", default=["cgm", "warfarin"], choices=["cgm", "warfarin"])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-steps", type=int, default=10)
    parser.add_argument("--cgm-folds", type=int, default=4)
    parser.add_argument("--warfarin-folds", type=int, default=5)
    parser.add_argument("--partitions", nargs="+", default=["race", "indication"])
    parser.add_argument("--dp-noise", nargs="*", type=float, default=[0.1, 1.0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "federated")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.monotonic()
    result: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/federated.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread per process, {args.workers} "
                   f"simulation workers, {platform.platform()}",
        "settings": f"{args.rounds} rounds x {args.local_steps} local MAML meta-updates per client"}

    def write() -> None:  # after each task, so that a finished task's results are kept
        result["seconds"] = time.monotonic() - start
        args.output.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
        args.output.with_suffix(".md").write_text(markdown(result))
        print(f"wrote {args.output.with_suffix('.md')}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        if "cgm" in args.tasks:
            result["cgm"] = glucose(data_path(CGM_HALL_CSV, args.data_dir), args.cgm_folds, args.rounds,
                                    args.local_steps, args.workers, Path(tmp))
            write()
        if "warfarin" in args.tasks:
            result["warfarin"] = warfarin(data_path(WARFARIN_CSV, args.data_dir), args.warfarin_folds, args.rounds,
                                          args.local_steps, args.workers, Path(tmp), tuple(args.partitions),
                                          tuple(args.dp_noise))
            write()


if __name__ == "__main__":
    main()

"""Glucose forecasting on the 19 Hall et al. subjects: medmeta (MAML) vs persistence, population AR, per-subject AR.

Leave one subject out: meta-train on the 18 others, adapt on the held-out subject's first 24 hours, and score every
method on the same later points at 30 and 60 minutes (the population AR model is fitted on the same 18 subjects).
Writes benchmarks/results/glucose_forecast.json and benchmarks/results/glucose_forecast.md.

    .venv/bin/python benchmarks/glucose_forecast.py [--data-dir ../shared/data]

Settings were chosen on a 4-fold split by subject of the same 19 subjects (no other data is available here), so
these numbers are optimistic for medmeta; the held-back iglu file is the independent test. About 4 minutes on one
CPU thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from medmeta.datasets.cgm import load_cgm
from medmeta.paths import CGM_HALL_CSV, data_path
from medmeta.treatment.glucose_eval import leave_one_subject_out

HERE = Path(__file__).resolve().parent
ORDER = ("medmeta", "medmeta_not_adapted", "population", "per_subject", "persistence")


def fmt_alert(a: dict) -> str:
    def pct(v):
        return "–" if v is None else f"{100 * v:.0f}%"
    return f"{pct(a['precision'])} / {pct(a['recall'])} ({a['events']} events)"


def markdown(result: dict) -> str:
    out = ["# Glucose forecasting: MAML adapted per subject vs baselines (Hall et al. 2018 CGM, 19 subjects)", "",
           f"Command: `{result['command']}`  ", f"Machine: {result['machine']} (shared with other jobs).  ",
           f"Data: {result['data']}.  ", f"Total time: {result['seconds']:.0f} s.", "",
           f"Protocol: {result['loso']['protocol']}. RMSE/MAE in mg/dL with 95% bootstrap CIs over forecast points; "
           "Clarke error grid zones in %; alerts: a forecast below 70 (hypo) or above 180 mg/dL (hyper), "
           "precision / recall against the reading. Forecasts are decision support, not orders.", ""]
    for h, r in result["loso"]["horizons"].items():
        out += [f"## {h} minutes ahead", "",
                "| method | n | RMSE [95% CI] | MAE [95% CI] | Clarke A | Clarke A+B | hypo alerts P / R | "
                "hyper alerts P / R |", "|---|---|---|---|---|---|---|---|"]
        for m in ORDER:
            s = r["methods"][m]
            out.append(f"| {m} | {s['n']} | {s['rmse']:.2f} {s['rmse_ci95']} | {s['mae']:.2f} {s['mae_ci95']} | "
                       f"{s['clarke_a']:.1f} | {s['clarke_ab']:.1f} | {fmt_alert(s['hypo_alerts'])} | "
                       f"{fmt_alert(s['hyper_alerts'])} |")
        better = sum(p["methods"]["medmeta"]["rmse"] < p["methods"]["population"]["rmse"]
                     for p in r["per_subject"].values())
        out += ["", f"medmeta's RMSE is below the population model's for {better} of {len(r['per_subject'])} subjects. "
                f"Skipped: {r['skipped'] or 'none'}.", "", "Per subject (RMSE, mg/dL):", "",
                "| subject | adaptation points | scored points | " + " | ".join(ORDER) + " |",
                "|---|---|---|" + "---|" * len(ORDER)]
        for sid, p in r["per_subject"].items():
            out.append(f"| {sid} | {p['adaptation_points']} | {p['scored_points']} | "
                       + " | ".join(f"{p['methods'][m]['rmse']:.2f}" for m in ORDER) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "glucose_forecast")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = data_path(CGM_HALL_CSV, args.data_dir)
    series, _ = load_cgm(path)
    start = time.monotonic()
    result = {"command": "python benchmarks/glucose_forecast.py" + (f" --data-dir {args.data_dir}" if args.data_dir
                                                                      else ""),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread, {platform.platform()}",
              "data": str(path)}
    result["loso"] = leave_one_subject_out(series, progress=print)
    result["seconds"] = time.monotonic() - start
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.output.with_suffix('.md')}")


if __name__ == "__main__":
    main()

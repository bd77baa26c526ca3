"""How long the dashboard takes to switch patient, on the embedded sample data.

Drives ``dashboard/app.py`` with Streamlit's AppTest (the script run that a patient switch
triggers, without the browser's drawing) after a warm-up that reads the records and loads the
models. For each page it switches to patients of three kinds (with genotype: a warfarin
suggestion; with CGM: a glucose forecast adapted to the patient; neither) and times the rerun:
the first view of each patient (its per-patient results computed) and a second view (cached).
Writes ``benchmarks/results/dashboard_latency.{json,md}``.

    python benchmarks/dashboard_latency.py [--per-kind 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
APP = HERE.parent / "dashboard" / "app.py"
PAGES = ("Patients", "Treatment", "Diagnosis")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=8, help="Patients of each kind to switch to.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "dashboard_latency")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="medmeta-dash-bench-"))
    os.environ.update(MEDMETA_HOME=str(home), MEDMETA_AUDIT_DB=str(home / "audit.sqlite"), MEDMETA_USER="bench")
    import torch
    from streamlit.testing.v1 import AppTest

    torch.set_num_threads(1)
    load = os.getloadavg()[0]  # other work on the machine slows every timing
    start = time.perf_counter()
    at = AppTest.from_file(str(APP), default_timeout=600).run()
    table = at.dataframe[0].value
    for page in PAGES:  # warm-up: records read, models and support memory loaded once per process
        at.sidebar.radio(key="page").set_value(page).run()
    warm_up = time.perf_counter() - start
    rng = np.random.default_rng(args.seed)
    kinds = {"genotype": table[table["genotype"]], "cgm": table[table["cgm"] > 0],
             "neither": table[~table["genotype"] & (table["cgm"] == 0)]}
    chosen = {k: rng.permutation(f["patient"].to_numpy())[:args.per_kind].tolist() for k, f in kinds.items()}
    rows = []
    for page in PAGES:
        at.sidebar.radio(key="page").set_value(page).run()
        for visit in ("first", "second"):
            for kind, patients in chosen.items():
                for patient in patients:
                    at.sidebar.selectbox(key="patient").set_value(patient)
                    t = time.perf_counter()
                    at.run()
                    seconds = time.perf_counter() - t
                    if at.exception:
                        raise SystemExit(f"the app failed: {at.exception[0].value}")
                    rows.append({"page": page, "kind": kind, "visit": visit, "seconds": seconds})
    summary = []
    for page in PAGES:
        for visit in ("first", "second"):
            for kind in chosen:
                s = np.asarray([r["seconds"] for r in rows
                                if r["page"] == page and r["visit"] == visit and r["kind"] == kind])
                if len(s):
                    summary.append({"page": page, "visit": visit, "kind": kind, "n": len(s),
                                    "median_s": round(float(np.median(s)), 3),
                                    "p90_s": round(float(np.quantile(s, 0.9)), 3),
                                    "max_s": round(float(s.max()), 3), "under_1s": int((s < 1).sum())})
    report = {
        "command": "python benchmarks/dashboard_latency.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (load average {load:.2f} at the start), "
                   "torch 1 thread; "
                   f"python {platform.python_version()}",
        "what": "seconds of the Streamlit script rerun after choosing another patient (AppTest; no browser "
                "drawing), sample data, after warm-up",
        "warm_up_seconds": round(warm_up, 1), "patients_in_source": len(table), "summary": summary, "runs": rows,
    }
    slow = [f"{s['page']} ({s['visit']} view, {s['kind']} patients: max {s['max_s']} s)"
            for s in summary if s["under_1s"] < s["n"]]
    n_under = sum(r["seconds"] < 1 for r in rows)
    report["conclusion"] = (f"{n_under} of {len(rows)} patient switches took under 1 s. "
                            + ("Not under 1 s: " + "; ".join(slow) + "." if slow else "All were under 1 s."))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = ["# Dashboard: time to switch patient", "", f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']}  ", f"What: {report['what']}; warm-up (read the records, load the "
             f"models and the support memory) {report['warm_up_seconds']} s.", "",
             f"**{report['conclusion']}** The first view of a CGM patient adapts the glucose model to that "
             "patient (and computes the adaptation curve); the result is cached, so a second view is quick.", "",
             "| page | visit | patients | n | median (s) | p90 (s) | max (s) | under 1 s |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {s['page']} | {s['visit']} | {s['kind']} | {s['n']} | {s['median_s']} | {s['p90_s']} | "
              f"{s['max_s']} | {s['under_1s']}/{s['n']} |" for s in summary]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

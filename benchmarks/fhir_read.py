"""Benchmark: reading FHIR Bundles into medmeta's tables, beside plain orjson parsing, in one run.

    .venv/bin/python benchmarks/fhir_read.py [--data ../shared/data] [--repeats 3]

Reports resources/s for (1) plain orjson parsing (gunzip + parse, nothing else), (2) medmeta's
end to end read (parse + validate what the tables use + normalise + type the tables), and
(3) full ``fhir.resources`` R4B validation of every resource (on the first bundles only, as it is
slow), and the memory of a medmeta read of 50, 100 and 200 bundles, each in a fresh process (peak
RSS, and the read's own peak allocation by tracemalloc: it grows with the tables, not the input).
Writes ``benchmarks/results/fhir_read.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def plain_orjson(files: list[Path]) -> int:
    import orjson

    n = 0
    for f in files:
        with gzip.open(f, "rb") as fh:
            n += len(orjson.loads(fh.read())["entry"])
    return n


def medmeta_read(files: list[Path]) -> int:
    from medmeta.fhir.reader import read_entries
    from medmeta.fhir.sources import iter_entries

    tables = read_entries(iter_entries(files))
    assert tables.counts.add_up()
    return tables.counts.totals()["read"]


def full_validation(files: list[Path]) -> int:
    import orjson
    from fhir.resources.R4B import get_fhir_model_class

    n = 0
    for f in files:
        with gzip.open(f, "rb") as fh:
            for e in orjson.loads(fh.read())["entry"]:
                r = e["resource"]
                get_fhir_model_class(r["resourceType"]).model_validate(r)
                n += 1
    return n


def timed(fn, files) -> tuple[int, float]:
    start = time.perf_counter()
    n = fn(files)
    return n, time.perf_counter() - start


def peak_memory(data: Path, n_files: int) -> list[float]:
    """Peak RSS of a fresh process reading the first ``n_files`` bundles, and the read's own peak (MiB)."""
    out = subprocess.run([sys.executable, __file__, "--data", str(data), "--memory-child", str(n_files)],
                         check=True, capture_output=True, text=True)
    return [float(x) for x in out.stdout.split()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full-validation-files", type=int, default=10)
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    files = sorted((args.data / "synthea_fhir_r4" / "bundles").glob("*.json.gz"))
    if args.memory_child:
        import tracemalloc

        import medmeta.fhir  # noqa: F401  (imports are not part of the read's own peak)

        tracemalloc.start()
        medmeta_read(files[: args.memory_child])
        traced_peak = tracemalloc.get_traced_memory()[1]
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"{rss_peak / 1024:.1f}\n{traced_peak / 2**20:.1f}")
        return

    medmeta_read(files[:5])  # warm-up: imports and model building
    rates: dict[str, list[float]] = {"orjson": [], "medmeta": []}
    for _ in range(args.repeats):  # interleaved, so that load on a shared machine hits both alike
        for name, fn in (("orjson", plain_orjson), ("medmeta", medmeta_read)):
            n, dt = timed(fn, files)
            rates[name].append(n / dt)
    n_full, dt_full = timed(full_validation, files[: args.full_validation_files])
    median = {k: statistics.median(v) for k, v in rates.items()}
    memory = {str(k): peak_memory(args.data, k) for k in (50, 100, 200)}
    result = {
        "command": "python benchmarks/fhir_read.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
                    "note": "shared development machine (2 cores, other jobs running): compare rates within a run"},
        "bundles": len(files), "resources": n,
        "resources_per_s": {k: round(v) for k, v in median.items()},
        "all_runs_resources_per_s": {k: [round(x) for x in v] for k, v in rates.items()},
        "medmeta_over_orjson": round(median["medmeta"] / median["orjson"], 3),
        "full_fhir_resources_validation_per_s": round(n_full / dt_full),
        "full_validation_resources": n_full,
        "peak_rss_mib_by_bundles_read": memory,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "fhir_read.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# FHIR read benchmark", "",
        f"Command: `{result['command']}` ({result['date']}, {result['machine']['platform']}, "
        f"Python {result['machine']['python']}, {result['machine']['cpus']} CPUs; {result['machine']['note']}).", "",
        f"{len(files)} Synthea bundles, {n:,} resources; median of {args.repeats} interleaved runs.", "",
        "| what | resources/s |", "| --- | ---: |",
        f"| plain orjson parsing (gunzip + parse) | {median['orjson']:,.0f} |",
        f"| medmeta read: parse + validate used resources + normalise into tables | {median['medmeta']:,.0f} |",
        f"| full fhir.resources R4B validation (first {args.full_validation_files} bundles) | "
        f"{n_full / dt_full:,.0f} |", "",
        f"medmeta / orjson = {result['medmeta_over_orjson']:.2f} (target: at least 0.25).", "",
        "Memory of a fresh process reading the first N bundles with medmeta, in MiB (peak RSS of the process, "
        "imports included / peak of the memory the read itself allocated, by tracemalloc): "
        + ", ".join(f"{k}: {v[0]:.0f} / {v[1]:.0f}" for k, v in memory.items()), "",
    ]
    (out / "fhir_read.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()

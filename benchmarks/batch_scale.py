"""Scale benchmark of ``medmeta batch``: patients/s and peak memory as the export grows.

Builds Bulk NDJSON exports of N patients by copying a base population under new ids (every
UUID or IWPC id in a copy replaced by one derived from it and the copy number, so references
stay consistent), then runs ``medmeta batch`` on each with 1 and 2 worker processes, sampling
the memory of the whole process tree. Base populations (``--mix``): ``synthea`` (the 200
Synthea patients: reading and normalising a full record, few models apply) and ``clinic``
(the 200 Synthea patients plus 200 IWPC patients written as FHIR, so that half the patients
get a warfarin dose proposal). Writes ``benchmarks/results/batch_scale.{json,md}``.

    python benchmarks/batch_scale.py --data ../shared/data --mix synthea clinic --sizes 1000 10000 --workers 1 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psutil

UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
IWPC_ID = re.compile(rb"\bPA[0-9]+\b")
URN = re.compile(rb'"reference"\s*:\s*"(urn:uuid:[0-9a-f-]{36})"')
LINES_PER_FILE = 200_000


def bulk_references(bundle: bytes) -> bytes:
    """``bundle`` with its ``urn:uuid:`` references written ``Type/id``, as a Bulk export has them."""
    local = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
             for e in orjson.loads(bundle)["entry"] if e.get("fullUrl", "").startswith("urn:uuid:")}
    return URN.sub(lambda m: f'"reference":"{local.get(m.group(1).decode(), m.group(1).decode())}"'.encode(), bundle)


def base_population(data: Path, mix: str) -> list[bytes]:
    """One JSON Bundle (bytes) per base patient."""
    raw = [bulk_references(gzip.decompress(p.read_bytes()))
           for p in sorted((data / "synthea_fhir_r4" / "bundles").glob("*.json.gz"))]
    if mix == "clinic":
        from medmeta import paths
        from medmeta.datasets.warfarin import load_iwpc
        from medmeta.fhir import iwpc_resources

        frame, _ = load_iwpc(data / paths.WARFARIN_CSV)
        for row in frame.head(len(raw)).to_dict("records"):
            entries = [{"resource": r} for r in iwpc_resources(row)]
            raw.append(orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    return raw


def new_ids(text: bytes, copy: int) -> bytes:
    """``text`` with every id replaced by one derived from it and ``copy``."""
    ns = uuid.uuid5(uuid.NAMESPACE_URL, f"medmeta-scale-copy-{copy}")
    text = UUID.sub(lambda m: str(uuid.uuid5(ns, m.group().decode())).encode(), text)
    return IWPC_ID.sub(lambda m: m.group() + f"-c{copy}".encode(), text)


def build_export(raw: list[bytes], n_patients: int, out: Path) -> Path:
    """A Bulk NDJSON export of ``n_patients`` (copies of the ``raw`` Bundles with new ids) in ``out``."""
    if (out / "manifest.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files: dict[str, tuple] = {}  # type -> (file, lines in it, file number)
    output = []
    for i in range(n_patients):
        copy, b = divmod(i, len(raw))
        text = new_ids(raw[b], copy) if copy else raw[b]
        for entry in orjson.loads(text)["entry"]:
            r = entry["resource"]
            t = r["resourceType"]
            f, lines, number = files.get(t, (None, 0, -1))
            if f is None or lines >= LINES_PER_FILE:
                if f is not None:
                    f.close()
                number += 1
                name = f"{t}.{number:03d}.ndjson.gz"
                f, lines = gzip.open(tmp / name, "wb", compresslevel=1), 0  # noqa: SIM115 (rotated, closed below)
                output.append({"type": t, "url": name})
            f.write(orjson.dumps(r) + b"\n")
            files[t] = (f, lines + 1, number)
    for f, _, _ in files.values():
        f.close()
    manifest = {"transactionTime": datetime.now(UTC).isoformat(), "request": "scale benchmark",
                "requiresAccessToken": False, "output": output, "error": []}
    (tmp / "manifest.json").write_bytes(orjson.dumps(manifest))
    tmp.rename(out)
    return out


def run(export: Path, output: Path, workers: int) -> dict:
    """Run ``medmeta batch`` and sample the resident memory of its process tree every 0.2 s."""
    shutil.rmtree(output, ignore_errors=True)
    cmd = [str(Path(sys.executable).with_name("medmeta")), "batch", "--input", str(export), "--output", str(output),
           "--workers", str(workers)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = [0]

    def sample() -> None:
        p = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [p, *p.children(recursive=True)]
                peak[0] = max(peak[0], sum(q.memory_info().rss for q in tree if q.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)

    thread = threading.Thread(target=sample)
    thread.start()
    proc.wait()
    thread.join()
    seconds = time.monotonic() - start
    manifest = json.loads((output / "manifest.json").read_text())
    patients = manifest["counts"]["patients"]["read"]
    return {"patients": patients, "workers": workers, "seconds": round(seconds, 1),
            "patients_per_s": round(patients / seconds, 2), "peak_rss_mib": round(peak[0] / 2**20),
            "ms_per_patient_per_worker": round(1000 * seconds * workers / patients, 1),
            "resources": manifest["counts"]["resources"]["read"], "partitions": manifest["partitions"],
            "results": manifest["counts"]["results"], "exit_code": proc.returncode}


def markdown(meta: dict) -> str:
    """The results as a table, one row per run."""
    lines = ["# Batch scale: patients/s and peak memory as the export grows", "",
             f"Command: `{meta['command']}`  ",
             f"Machine: {meta['machine']}, {meta['cpus']} CPU cores, {meta['memory_gib']} GiB; {meta['when']}  ",
             "Peak memory: resident set of the whole process tree (client, scheduler, workers), sampled every 0.2 s.",
             "", "| mix | patients | export (MiB) | resources | partitions | workers | seconds | patients/s "
             "| ms/patient/worker | peak RSS (MiB) | results |", "|" + "---|" * 11]
    for r in meta["runs"]:
        results = ", ".join(f"{k} {v:,}" for k, v in r["results"].items()) or "none"
        lines.append(f"| {r['mix']} | {r['patients']:,} | {r['export_mib']} | {r['resources']:,} | {r['partitions']} "
                     f"| {r['workers']} | {r['seconds']} | {r['patients_per_s']} | {r['ms_per_patient_per_worker']} "
                     f"| {r['peak_rss_mib']:,} | {results} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared/data folder")
    parser.add_argument("--mix", nargs="+", choices=["synthea", "clinic"], default=["synthea", "clinic"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work", type=Path, default=Path("/tmp/medmeta-batch-scale"))
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "batch_scale")
    args = parser.parse_args()
    rows = []
    for mix in args.mix:
        raw = base_population(args.data, mix)
        for n in args.sizes:
            export = build_export(raw, n, args.work / f"export-{mix}-{n}")
            for w in args.workers:
                row = {"mix": mix, "export_mib": round(sum(f.stat().st_size for f in export.iterdir()) / 2**20),
                       **run(export, args.work / f"out-{mix}-{n}-{w}", w)}
                print(row, flush=True)
                rows.append(row)
                shutil.rmtree(args.work / f"out-{mix}-{n}-{w}")
            shutil.rmtree(export)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python benchmarks/batch_scale.py " + " ".join(sys.argv[1:]),
            "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
            "cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30), "runs": rows}
    args.results.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    args.results.with_suffix(".md").write_text(markdown(meta))
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()

"""The final output of a batch run: results as NDJSON per type, one Provenance, rejects, the manifest.

Merging reads the partitions in order and writes each file under a temporary name first, so
re-running the merge (after a crash or a resume) gives the same files.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

import medmeta
from medmeta.batch.partition import partition_dir
from medmeta.batch.plan import Plan
from medmeta.errors import MedmetaError
from medmeta.fhir import ModelInfo, provenance

_NOT_RESULTS = {"outcomes.ndjson", "rejects.ndjson"}


def _concat(sources: list[Path], target: Path) -> int:
    """Concatenate ``sources`` into ``target`` atomically; return the number of lines."""
    tmp = target.with_name(target.name + ".tmp")
    lines = 0
    with tmp.open("wb") as out:
        for s in sources:
            data = s.read_bytes()
            out.write(data)
            lines += data.count(b"\n")
    tmp.replace(target)
    return lines


def merge(plan: Plan, workdir: Path, output: Path, models: list[ModelInfo],
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the run's output files from its partitions and return the manifest (also written)."""
    parts = [partition_dir(workdir, p) for p in range(plan.partitions)]
    summaries = [orjson.loads((d / "summary.json").read_bytes()) for d in parts]
    types = sorted({f.name for d in parts for f in d.glob("*.ndjson")} - _NOT_RESULTS)
    written = {name.removesuffix(".ndjson"): _concat([d / name for d in parts if (d / name).exists()],
                                                     output / name) for name in types}
    targets = []
    for name in types:
        with (output / name).open("rb") as f:
            targets.extend(f"{r['resourceType']}/{r['id']}" for r in map(orjson.loads, f))
    if targets:
        run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"medmeta-batch:{plan.source}:{plan.run_time}"))
        prov = provenance(targets, models, recorded=plan.run_time, rid=run_id)
        (output / "Provenance.ndjson").write_bytes(orjson.dumps(prov) + b"\n")
        written["Provenance"] = 1
    _concat([d / "outcomes.ndjson" for d in parts], output / "outcomes.ndjson")
    n_rejects = _concat([d / "rejects.ndjson" for d in parts], output / "rejects.ndjson")

    patients: Counter = Counter()
    skipped: Counter = Counter()
    resources: Counter = Counter()
    errors: dict[str, dict] = {}
    for s in summaries:
        patients.update(s["patients"])
        resources.update({k: s["resources"][k] for k in ("read", "used", "ignored", "rejected")})
        for model, e in s["model_errors"].items():  # patients failed in all partitions, and the first error
            errors[model] = {"patients": errors.get(model, {}).get("patients", 0) + e["patients"],
                             "first": errors.get(model, e)["first"]}
    for d in parts:
        with (d / "outcomes.ndjson").open("rb") as f:
            skipped.update(o["reason"] for o in map(orjson.loads, f) if o["status"] == "skipped")
    manifest = {
        "medmeta_version": medmeta.__version__,
        "run_time": plan.run_time,
        "source": plan.source,
        "inputs": [{"path": f.path, "bytes": f.bytes, "sha256": f.sha256} for f in plan.files],
        "inputs_skipped": [{"path": p, "reason": r} for p, r in plan.skipped],
        "models": [{"name": m.name, "version": m.version, "sha256": m.checksum} for m in models],
        "partitions": plan.partitions,
        "counts": {
            "patients": {k: patients[k] for k in ("read", "scored", "skipped", "rejected")},
            "patients_skipped_by_reason": dict(skipped.most_common()),
            "resources": {k: resources[k] for k in ("read", "used", "ignored", "rejected")},
            "rejects": n_rejects,
            "results": written,
        },
        "model_errors": errors,
        "outputs": sorted([*(f"{t}.ndjson" for t in written), "outcomes.ndjson", "rejects.ndjson"]),
        **(extra or {}),
        "disclaimer": medmeta.DISCLAIMER,
    }
    c = manifest["counts"]
    if c["patients"]["read"] != c["patients"]["scored"] + c["patients"]["skipped"] + c["patients"]["rejected"] or \
            c["resources"]["read"] != c["resources"]["used"] + c["resources"]["ignored"] + c["resources"]["rejected"]:
        raise MedmetaError(f"counts do not add up: {c['patients']}, {c['resources']}")
    write_manifest(output, manifest)
    return manifest


def write_manifest(output: Path, manifest: dict[str, Any]) -> None:
    tmp = output / "manifest.json.tmp"
    tmp.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    tmp.replace(output / "manifest.json")

"""Score one partition: read its patients, run every model, write the results atomically.

A partition's output folder appears (by one rename) only when complete, so after a crash a
partition is either wholly done or done again; nothing is written twice.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from medmeta.batch.plan import Plan
from medmeta.batch.shuffle import spilled_entries
from medmeta.errors import MedmetaError
from medmeta.fhir import read_entries, validate_r4
from medmeta.fhir.sources import Entry, iter_file
from medmeta.scoring import Scorer

log = logging.getLogger("medmeta.batch")

#: Scorers built in this process, by factory: models are loaded once per worker.
_SCORERS: dict[str, list[Scorer]] = {}


def load_scorers(factory: str) -> list[Scorer]:
    """The scorers made by ``factory`` (``"module:function"``), built once per process."""
    if factory not in _SCORERS:
        module, _, name = factory.partition(":")
        try:
            make: Callable[[], list[Scorer]] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise MedmetaError(f"scorers {factory!r}: expected 'module:function' naming a function that returns "
                               f"scorers ({type(exc).__name__}: {exc})") from None
        _SCORERS[factory] = list(make())
    return _SCORERS[factory]


def partition_dir(workdir: Path, partition: int) -> Path:
    return workdir / "parts" / f"part-{partition:05d}"


def _entries(plan: Plan, partition: int, workdir: Path) -> Iterator[Entry]:
    bundles = (iter_file(Path(f.path)) for f in plan.bundle_files(partition))
    return chain(chain.from_iterable(bundles), spilled_entries(workdir, plan.ndjson, partition))


def _lines(items: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(x, option=orjson.OPT_SORT_KEYS) + b"\n" for x in items)


def process_partition(plan: Plan, partition: int, workdir: Path, factory: str) -> dict[str, Any]:
    """Score ``partition`` unless it is already done; return its summary."""
    final = partition_dir(workdir, partition)
    if final.is_dir():
        return orjson.loads((final / "summary.json").read_bytes())
    tables = read_entries(_entries(plan, partition, workdir))
    patients = sorted(tables.patients["patient_id"].astype(str))
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    models: dict[str, list[str]] = defaultdict(list)
    reasons: dict[str, list[str]] = defaultdict(list)
    errors: dict[str, str] = {}
    for scorer in load_scorers(factory):
        try:
            scores = scorer.score(tables, run_time=plan.run_time)
            for pid, resources in scores.results.items():
                results[pid].extend(validate_r4(r) for r in resources)
                models[pid].append(scorer.name)
        except Exception as exc:  # one failing model must not stop the others; it is reported
            log.exception("model %s failed on partition %d", scorer.name, partition)
            errors[scorer.name] = f"{type(exc).__name__}: {exc}"
            continue
        for pid, why in scores.skipped.items():
            reasons[pid].append(f"{scorer.name}: {why}")

    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    outcomes = []
    for pid in patients:
        for r in results.get(pid, ()):
            by_type[r["resourceType"]].append(r)
        if models.get(pid):
            outcomes.append({"patient": pid, "status": "scored", "models": models[pid]})
        else:
            why = "; ".join(reasons.get(pid, [])) or "no model applies"
            if errors:
                why = "; ".join([why, *(f"{m}: error" for m in errors)])
            outcomes.append({"patient": pid, "status": "skipped", "reason": why})
    counts = tables.counts
    summary = {
        "partition": partition,
        "patients": {"read": counts.read["Patient"], "scored": sum(o["status"] == "scored" for o in outcomes),
                     "skipped": sum(o["status"] == "skipped" for o in outcomes),
                     "rejected": counts.rejected["Patient"]},
        "results": {k: len(v) for k, v in sorted(by_type.items())},
        "resources": counts.to_dict(),
        "model_errors": errors,
    }

    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for rtype, resources in by_type.items():
        (tmp / f"{rtype}.ndjson").write_bytes(_lines(resources))
    (tmp / "outcomes.ndjson").write_bytes(_lines(outcomes))
    (tmp / "rejects.ndjson").write_bytes(_lines([r.to_dict() for r in tables.rejected]))
    (tmp / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_SORT_KEYS))
    tmp.rename(final)
    return summary

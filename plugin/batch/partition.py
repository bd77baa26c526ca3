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
from medmeta.fhir import FhirTables, read_entries, validate_r4
from medmeta.fhir.sources import Entry, iter_file
from medmeta.scoring import PatientScores, Scorer

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


def _validated(scores: PatientScores) -> PatientScores:
    for resources in scores.results.values():
        for r in resources:
            validate_r4(r)
    return scores


def score_patients(scorer: Scorer, tables: FhirTables, run_time: str) -> tuple[PatientScores, dict[str, str]]:
    """A model's validated results for the partition, and the patients it failed on with the error.

    The model scores the whole partition at once; if that fails, it scores each patient alone, so a
    patient whose record breaks a model costs that patient's result of that model only. The log names
    the model and the error type, never a patient or a value.
    """
    try:
        return _validated(scorer.score(tables, run_time=run_time)), {}
    except Exception as exc:  # any model failure is isolated and reported, never fatal
        log.warning("model %s failed on a partition (%s); scoring its patients one by one", scorer.name,
                    type(exc).__name__)
    scores, failed = PatientScores(), {}
    for pid in sorted(tables.patients["patient_id"].astype(str)):
        try:
            one = _validated(scorer.score(tables.for_patients([pid]), run_time=run_time))
        except Exception as exc:
            failed[pid] = f"{type(exc).__name__}: {exc}"
            continue
        scores.results.update(one.results)
        scores.skipped.update(one.skipped)
    if failed:
        log.warning("model %s failed on %d patient(s) of a partition", scorer.name, len(failed))
    return scores, failed


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
    errors: dict[str, dict[str, Any]] = {}
    failures: dict[str, list[str]] = defaultdict(list)
    for scorer in load_scorers(factory):
        scores, failed = score_patients(scorer, tables, plan.run_time)
        for pid, resources in scores.results.items():
            results[pid].extend(resources)
            models[pid].append(scorer.name)
        for pid, why in scores.skipped.items():
            reasons[pid].append(f"{scorer.name}: {why}")
        for pid, error in failed.items():
            failures[pid].append(f"{scorer.name}: {error}")
        if failed:
            errors[scorer.name] = {"patients": len(failed), "first": next(iter(failed.values()))}

    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    outcomes = []
    for pid in patients:
        for r in results.get(pid, ()):
            by_type[r["resourceType"]].append(r)
        model_errors = {"model_errors": failures[pid]} if pid in failures else {}
        if models.get(pid):
            outcomes.append({"patient": pid, "status": "scored", "models": models[pid], **model_errors})
        else:
            why = "; ".join(reasons.get(pid, []) + [f"model error ({e})" for e in failures.get(pid, [])])
            outcomes.append({"patient": pid, "status": "skipped", "reason": why or "no model applies",
                             **model_errors})
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

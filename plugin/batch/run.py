"""Run a batch job on Dask: shuffle NDJSON by patient, score the partitions, merge, write back.

With no scheduler the job runs on a local Dask cluster that needs no set-up (in-process for one
worker, worker processes for more); with ``scheduler="tcp://host:8786"`` the same code runs on
an existing ``dask.distributed`` cluster, whose workers must see the input and output paths.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from dask.distributed import Client, LocalCluster, as_completed

from medmeta.batch.output import merge, write_manifest
from medmeta.batch.partition import load_scorers, process_partition
from medmeta.batch.plan import make_plan, resume_or_save
from medmeta.batch.shuffle import shuffle_file
from medmeta.batch.writeback import post_with_retries
from medmeta.errors import MedmetaError
from medmeta.progress import progress

DEFAULT_SCORERS = "medmeta.scoring:default_scorers"


@dataclass
class BatchConfig:
    """Arguments of ``medmeta batch``."""

    source: str
    output: Path
    post: str | None = None
    token: str | None = None
    scheduler: str | None = None
    workers: int = 1
    partitions: int | None = None
    dry_run: bool = False
    chunk_size: int = 500
    scorers: str = DEFAULT_SCORERS
    #: the run's timestamp (ISO 8601) on its results; default: when the run starts (kept on resume)
    run_time: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise MedmetaError(f"workers must be at least 1, got {self.workers}")
        if self.partitions is not None and self.partitions < 1:
            raise MedmetaError(f"partitions must be at least 1, got {self.partitions}")
        if self.chunk_size < 1:
            raise MedmetaError(f"chunk_size must be at least 1, got {self.chunk_size}")
        if self.dry_run and not self.post:
            raise MedmetaError("dry_run builds the Bundles for --post: give --post URL with it")


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[Client]:
    """A client of ``scheduler``, or of a local cluster of ``workers`` single-threaded workers."""
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=workers > 1, dashboard_address=None) as c, \
            Client(c) as client:
        yield client


def _local_source(cfg: BatchConfig, workdir: Path) -> str:
    """The source as local files: a server's data is exported once into the work folder."""
    if not cfg.source.startswith(("http://", "https://")):
        return cfg.source
    from medmeta.fhir import FhirClient
    from medmeta.fhir.validation import USED_TYPES

    done = workdir / "export"
    if not (done / "manifest.json").exists():
        tmp = workdir / "export.tmp"
        with FhirClient(cfg.source, token=cfg.token) as client:
            client.export(tmp, types=tuple(sorted(USED_TYPES)))
        tmp.rename(done)
    return str(done)


def _results(output: Path, manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for name in manifest["outputs"]:
        if name not in ("outcomes.ndjson", "rejects.ndjson"):
            with (output / name).open("rb") as f:
                yield from map(orjson.loads, f)


def run_batch(cfg: BatchConfig, *, show_progress: bool = True) -> dict[str, Any]:
    """Score every patient of ``cfg.source`` into ``cfg.output``; resume a killed run; return the manifest."""
    output = Path(cfg.output)
    workdir = output / ".work"
    workdir.mkdir(parents=True, exist_ok=True)
    source = _local_source(cfg, workdir)
    models = [s.model for s in load_scorers(cfg.scorers)]
    plan = resume_or_save(make_plan(source, partitions=cfg.partitions, run_time=cfg.run_time,
                                    models=tuple(f"{m.name}:{m.version}:{m.checksum}" for m in models)),
                          workdir / "plan.json")
    start = time.monotonic()
    with dask_client(cfg.scheduler, cfg.workers) as client:
        shuffles = client.map(shuffle_file, [plan.files[i].path for i in plan.ndjson], list(plan.ndjson),
                              partitions=plan.partitions, workdir=workdir, pure=False)
        terminal = None if show_progress else False
        if shuffles:
            with progress("Partitioning NDJSON by patient", len(shuffles), force_terminal=terminal) as advance:
                for done, future in enumerate(as_completed(shuffles), start=1):
                    future.result()
                    advance(done, f"{done:,} of {len(shuffles):,} files")
        shared_plan = client.scatter(plan, broadcast=True)
        futures = [client.submit(process_partition, shared_plan, p, workdir, cfg.scorers, pure=False)
                   for p in range(plan.partitions)]
        patients = 0
        with progress("Scoring patients", plan.partitions, force_terminal=terminal) as advance:
            for done, future in enumerate(as_completed(futures), start=1):
                patients += future.result()["patients"]["read"]
                rate = patients / max(time.monotonic() - start, 1e-9)
                advance(done, f"{patients:,} patients, {rate:.1f} patients/s")
        workers = len(client.scheduler_info()["workers"])
    engine = {"engine": {"scheduler": cfg.scheduler or "local", "workers": workers,
                         "seconds": round(time.monotonic() - start, 3)}}
    manifest = merge(plan, workdir, output, models, extra=engine)
    if cfg.post:
        sent = post_with_retries(_results(output, manifest), cfg.post, token=cfg.token, chunk_size=cfg.chunk_size,
                                 dry_run=cfg.dry_run)
        manifest["write_back"] = {"url": cfg.post, "dry_run": cfg.dry_run, **sent}
        write_manifest(output, manifest)
    return manifest

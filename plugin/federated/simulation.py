"""A federated run in Flower's simulation on one machine: every client is a virtual Flower node (a Ray actor
serves several of them in turn), each reading only its own partition of the data file."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from medmeta.errors import DataError
from medmeta.federated.clients import partitions
from medmeta.federated.settings import FederatedSettings


def client_count(settings: FederatedSettings) -> int:
    """How many clients the run has: one per partition of the data file, or ``settings.clients`` of them."""
    available = len(partitions(settings.task, settings.data, settings.partition_by))
    if settings.clients > available:
        raise DataError(f"{settings.clients} clients asked for, but the file has {available} {settings.task} "
                        f"partitions by {settings.partition_by}", source=settings.data)
    count = settings.clients or available
    if count < settings.min_clients:
        raise DataError(f"{count} clients, fewer than the {settings.min_clients} the run needs (--min-clients)",
                        source=settings.data)
    return count


def simulate(settings: FederatedSettings, *, on_round: Callable[[int, Any], None] | None = None,
             client_mods: Sequence[Callable] = (), workers: int | None = None,
             verbose: bool = False) -> dict[str, Any]:
    """Run federated meta-training in Flower's simulation and return the run's report (``report["model"]`` is
    the saved model folder). ``workers`` processes train clients in parallel (default: the CPU count, at most
    one per client); ``on_round(round, model)`` sees the global model after every round."""
    from flwr.simulation import run_simulation

    from medmeta.federated.app import client_app, server_app

    count = client_count(settings)
    workers = max(1, min(workers or os.cpu_count() or 1, count))
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": workers, "num_gpus": 0, "include_dashboard": False,
                             "logging_level": "INFO" if verbose else "ERROR", "log_to_driver": verbose}}
    logging.getLogger("alembic").setLevel(logging.WARNING)  # imported by Flower; chatty at INFO
    flower_log = logging.getLogger("flwr")
    level = flower_log.level
    flower_log.setLevel(logging.INFO if verbose else logging.ERROR)
    report: dict[str, Any] = {}
    try:
        run_simulation(server_app(settings, on_round, report), client_app(client_mods), num_supernodes=count,
                       backend_config=backend, verbose_logging=verbose)
    finally:
        flower_log.setLevel(level)
    return {**report, "clients": count, "workers": workers}

"""Federated meta-learning with Flower: learn the MAML initialisation across hospitals or patients' devices.

Per-FedAvg (Fallah et al. 2020): each client runs MAML meta-updates (the engine's
:func:`~medmeta.learners.maml.meta_gradient`) on tasks built from its own data and sends back only
the updated parameters; the server averages them (FedAvg) and sends the average out again.

- :mod:`~medmeta.federated.settings`: what a federated run is (task, rounds, local steps, clients...);
- :mod:`~medmeta.federated.clients`: who the clients are: one per CGM subject, one per patient group;
- :mod:`~medmeta.federated.task`: the stages every federated task has (statistics, local meta-training,
  calibration, assembling the model) and the Per-FedAvg client step;
- :mod:`~medmeta.federated.glucose`, :mod:`~medmeta.federated.warfarin`: those stages for the two models;
- :mod:`~medmeta.federated.app`: the Flower ``ServerApp`` and ``ClientApp`` (the only Flower-specific code);
- :mod:`~medmeta.federated.simulation`: a run in Flower's simulation on one machine.

Real deployments use Flower's own processes (``flower-superlink``, ``flower-supernode``, ``flwr run``) with
the Flower App in ``flower_app/`` (docs/federated.md). The model written at the end has the same format as
the centrally trained one. Needs the ``federated`` extra (``pip install 'medmeta[federated]'``).
"""

import os
from pathlib import Path

# medmeta never reports usage anywhere: turn off Flower's telemetry and update check and Ray's usage statistics
# before either is imported (processes started from here inherit it); CPU-only Ray leaves devices alone.
for _name, _value in (("FLWR_TELEMETRY_ENABLED", "0"), ("FLWR_DISABLE_UPDATE_CHECK", "1"),
                      ("RAY_USAGE_STATS_ENABLED", "0"),
                      ("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")):
    os.environ.setdefault(_name, _value)

#: The Flower App folder (its ``pyproject.toml``) to give ``flwr run`` for a deployment.
FLOWER_APP = Path(__file__).with_name("flower_app")

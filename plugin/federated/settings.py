"""The settings of a federated run, and their form as a Flower run configuration (kebab-case keys)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

#: Tasks and how each one's data is split into clients (the first way is the default).
PARTITIONS = {"cgm": ("subject",), "warfarin": ("race", "indication")}


@dataclass(frozen=True)
class FederatedSettings:
    """One federated meta-training run.

    ``data`` is the data file the clients read when their node does not name its own (in a simulation every
    client reads its partition of this file); ``output`` is the model folder the server writes.
    In a simulation, ``clients`` = 0 means one client per partition, fewer takes the first ones (CGM subjects in
    id order, patient groups largest first); a deployment uses every SuperNode that is connected. The server
    waits for ``min_clients`` before it starts; a round waits at most ``round_timeout`` seconds for replies, and
    clients that fail or do not answer in time are left out of it. ``dp_clip`` > 0 clips each client's update to
    that L2 norm on the server, weights clients equally and ``dp_noise`` adds Gaussian noise of standard deviation
    ``dp_noise * dp_clip / clients`` to the average (Flower's server-side fixed clipping).
    """

    task: str
    data: str
    output: str
    rounds: int = 20
    local_steps: int = 10
    clients: int = 0
    partition_by: str = ""
    min_clients: int = 2
    round_timeout: float = 600.0
    seed: int = 0
    dp_clip: float = 0.0
    dp_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.task not in PARTITIONS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {sorted(PARTITIONS)}")
        if not self.partition_by:
            object.__setattr__(self, "partition_by", PARTITIONS[self.task][0])
        if self.partition_by not in PARTITIONS[self.task]:
            raise ValueError(f"{self.task} clients are split by {' or '.join(PARTITIONS[self.task])}, "
                             f"not {self.partition_by!r}")
        if self.rounds < 1 or self.local_steps < 1 or self.clients < 0 or self.min_clients < 1:
            raise ValueError("rounds, local_steps and min_clients must be >= 1, clients >= 0")
        if self.dp_clip < 0 or self.dp_noise < 0 or (self.dp_noise > 0 and self.dp_clip == 0):
            raise ValueError("dp_noise needs dp_clip > 0 (the noise is scaled by the clipping norm)")

    def to_run_config(self) -> dict[str, Any]:
        """As a Flower run configuration (``--run-config`` / ``[tool.flwr.app.config]``)."""
        return {f.name.replace("_", "-"): v for f, v in zip(fields(self), asdict(self).values(), strict=True)}

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> FederatedSettings:
        """From a Flower run configuration; unknown keys are an error (a typo must not be ignored)."""
        names = {f.name.replace("_", "-"): f for f in fields(cls)}
        unknown = sorted(set(config) - set(names))
        if unknown:
            raise ValueError(f"unknown run-config keys {unknown}; expected some of {sorted(names)}")
        kinds = {"int": int, "float": float, "str": str}
        return cls(**{names[k].name: kinds[str(names[k].type)](v) for k, v in config.items()})

    def seed_for(self, round_: int, part: int = 0) -> int:
        """A seed of its own for each round (and each ensemble member) of local training."""
        return (self.seed * 1_000_003 + round_ * 1_009 + part) % 2**31

"""``medmeta federated``: meta-train the glucose or warfarin model with Flower, each client keeping its own data."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from medmeta.cli.options import DataDir
from medmeta.errors import MedmetaError

app = typer.Typer(help="Federated meta-learning with Flower: learn the MAML initialisation across hospitals or "
                       "patients' devices without moving their data (decision support, not orders).",
                  no_args_is_help=True)


class TaskName(StrEnum):
    cgm = "cgm"
    warfarin = "warfarin"


def _flower() -> None:
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise MedmetaError("federated learning needs Flower: pip install 'medmeta[federated]'") from None


@app.command("train")
def train(
    task: Annotated[TaskName, typer.Option(help="cgm: one client per CGM subject; warfarin: one client per "
                                                "patient group (a hospital).")],
    clients: Annotated[int, typer.Option(help="Number of clients (0: one per subject or group; fewer: the "
                                              "first subjects by id, the largest groups).")] = 0,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 20,
    local_steps: Annotated[int, typer.Option(help="MAML meta-updates each client makes per round.")] = 10,
    input: Annotated[Path | None, typer.Option("--input", help="Data file (default: the data root's CGM or IWPC "
                                                               "file).")] = None,
    data_dir: DataDir = None,
    output: Annotated[Path | None, typer.Option(help="Model folder to write (default: runs/federated/TASK).")] = None,
    partition: Annotated[str | None, typer.Option(help="Warfarin clients by 'race' (default) or 'indication'.")]
    = None,
    min_clients: Annotated[int, typer.Option(help="Clients needed to start.")] = 2,
    round_timeout: Annotated[float, typer.Option(help="Seconds a round waits for clients; later ones are left "
                                                      "out of it.")] = 600.0,
    workers: Annotated[int | None, typer.Option(help="Processes training clients in parallel (default: CPUs).")]
    = None,
    dp_clip: Annotated[float, typer.Option(help="Clip each client's update to this L2 norm (0: off).")] = 0.0,
    dp_noise: Annotated[float, typer.Option(help="Gaussian noise multiplier on the clipped average.")] = 0.0,
    seed: int = 0,
    verbose: Annotated[bool, typer.Option(help="Show Flower's and Ray's logs.")] = False,
) -> None:
    """Meta-train TASK in Flower's simulation: each client runs MAML meta-updates on its own data and sends only
    parameters; the server averages them (Per-FedAvg). The model has the format of the centrally trained one:
    score it with `medmeta cgm eval --model DIR` or `medmeta warfarin eval --model DIR`."""
    _flower()
    from rich.console import Console

    from medmeta.federated.settings import FederatedSettings
    from medmeta.federated.simulation import simulate
    from medmeta.paths import CGM_HALL_CSV, WARFARIN_CSV, data_path

    data = input or data_path(CGM_HALL_CSV if task is TaskName.cgm else WARFARIN_CSV, data_dir)
    output = output or Path("runs/federated") / task.value
    try:
        settings = FederatedSettings(task=task.value, data=str(data), output=str(output.resolve()), rounds=rounds,
                                     local_steps=local_steps, clients=clients, partition_by=partition or "",
                                     min_clients=min_clients, round_timeout=round_timeout, seed=seed,
                                     dp_clip=dp_clip, dp_noise=dp_noise)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    report = simulate(settings, workers=workers, verbose=verbose)
    console = Console()
    last = report["rounds"][-1]
    dropped = sum(r["asked"] - r["replied"] for r in report["rounds"])
    console.print(f"{report['clients']} clients ({settings.partition_by}), {rounds} rounds in "
                  f"{report['seconds']:.0f} s; "
                  f"{dropped} client-rounds left out (failed or late). Per client and round: "
                  f"{last['bytes_from_client'] / 1024:.1f} KiB sent, {last['bytes_to_client'] / 1024:.1f} KiB "
                  "received.")
    evaluate = "cgm eval --input CSV --json OUT" if task is TaskName.cgm else "warfarin eval --input CSV --json OUT"
    console.print(f"Model: {report['model']}  (evaluate: medmeta {evaluate} --model {report['model']})")


@app.command("flower-app")
def flower_app() -> None:
    """Print the folder of medmeta's Flower App, for `flwr run` against a running SuperLink (docs/federated.md)."""
    from medmeta.federated import FLOWER_APP

    typer.echo(FLOWER_APP)

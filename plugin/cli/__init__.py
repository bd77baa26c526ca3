"""The ``medmeta`` command line: one sub-command module per job."""

from __future__ import annotations

import logging
import os

import typer
from rich.console import Console

from medmeta.cli import batch, cgm, dashboard, demo, federated, fewshot, fhir, fusion, hba1c, warfarin
from medmeta.errors import MedmetaError

app = typer.Typer(
    name="medmeta",
    help="Meta-learning for clinical data: few-shot diagnosis and personalised treatment. "
    "Outputs are decision support, not orders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("demo")(demo.demo)
app.add_typer(fewshot.app, name="fewshot")
app.add_typer(fhir.app, name="fhir")
app.add_typer(warfarin.app, name="warfarin")
app.add_typer(cgm.app, name="cgm")
app.add_typer(hba1c.app, name="hba1c")
app.command("batch")(batch.batch)
app.add_typer(fusion.app, name="fusion")
app.command("dashboard")(dashboard.dashboard)
app.add_typer(federated.app, name="federated")


@app.callback()
def _root() -> None:
    """Meta-learning for clinical data. Outputs are decision support, not orders."""


def main() -> None:
    """Entry point of the ``medmeta`` script: medmeta's own errors print as one clear line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # Dask's own chatter, unless asked for
    try:
        app()
    except MedmetaError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(2) from None

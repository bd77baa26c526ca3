"""``medmeta demo``: the main job on the embedded sample data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medmeta.cli.options import DataDir


def demo(
    output: Annotated[Path, typer.Option(help="Folder for the sample export and the results.")] = Path("runs/demo"),
    data_dir: DataDir = None,
    workers: Annotated[int, typer.Option(help="Worker processes of the local Dask cluster.")] = 1,
) -> None:
    """Score a small hospital's FHIR export (the embedded samples) with every model that applies, and write
    FHIR results: warfarin dose proposals, glucose forecasts, with rejects and a manifest."""
    from medmeta.demo import DemoConfig, run_demo

    manifest = run_demo(DemoConfig(output=output, data_dir=data_dir, workers=workers))
    console = Console()
    export, results = output / "export", output / "results"
    c = manifest["counts"]
    p, r = c["patients"], c["resources"]
    console.print(f"Sample export: {export}  ({r['read']:,} FHIR resources of {p['read']:,} patients)")
    console.print(f"Patients: {p['scored']:,} scored, {p['skipped']:,} skipped (no model applies), "
                  f"{p['rejected']:,} rejected")
    console.print("Results: " + ", ".join(f"{k} {v:,}" for k, v in c["results"].items()))
    console.print(f"Rejected input records: {c['rejects']:,} (reasons in {results / 'rejects.ndjson'})")
    console.print(f"\nResults are in {results}/ (FHIR NDJSON per type, manifest.json, outcomes.ndjson).")
    console.print(f"Review these patients in the dashboard (the same models, with their evidence):  "
                  f"medmeta dashboard --source {export}")
    console.print(f"[dim]{manifest['disclaimer']}[/dim]")

"""``medmeta demo``: the main job on the embedded sample data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medmeta.cli.options import DataDir


def demo(
    output: Annotated[Path, typer.Option(help="Folder for the sample export and the results.")] = Path("runs/demo"),
    data_dir: DataDir = None,
    workers: Annotated[int, typer.Option(help="Worker processes of the local Dask cluster.")] = 1,
    budget_seconds: Annotated[float, typer.Option(help="Few-shot meta-training time budget.")] = 60.0,
    episodes: Annotated[int, typer.Option(help="Few-shot evaluation episodes per benchmark.")] = 200,
    shots: Annotated[int, typer.Option(help="Labelled examples per class (K) in the few-shot episodes.")] = 5,
    seed: int = 0,
    quick: Annotated[bool, typer.Option(help="3 s of meta-training and 20 episodes (a smoke test).")] = False,
) -> None:
    """Meta-train a few-shot image learner and test it on data sets it never saw; then score a small hospital's
    FHIR export (the embedded samples) with every model that applies, and write FHIR results: warfarin dose
    proposals, glucose forecasts, with rejects and a manifest."""
    from medmeta.demo import DemoConfig, run_demo

    if quick:
        budget_seconds, episodes = min(budget_seconds, 3.0), min(episodes, 20)
    manifest = run_demo(DemoConfig(output=output, data_dir=data_dir, workers=workers, budget_seconds=budget_seconds,
                                   eval_episodes=episodes, shots=shots, seed=seed))
    console = Console()
    fewshot = manifest["fewshot"]
    t = fewshot["training"]
    table = Table(title=f"1. Few-shot diagnosis: a Prototypical network meta-trained for {t['seconds']:.0f} s "
                        f"({t['episodes']} episodes); {shots}-shot accuracy, mean over episodes with 95% CI")
    for column in ("benchmark", "ways", "episodes", "accuracy"):
        table.add_column(column)
    for e in fewshot["evaluations"]:
        table.add_row(e["benchmark"], str(e["ways"]), str(e["episodes"]),
                      f"{100 * e['accuracy']:.1f}% ± {100 * e['ci95']:.1f}")
    console.print(table)
    console.print(f"Model (safetensors): {fewshot['model']}   Results: {output / 'fewshot' / 'results.json'}\n")
    console.print("2. The FHIR batch job")
    export, results = output / "export", output / "results"
    c = manifest["counts"]
    p, r = c["patients"], c["resources"]
    console.print(f"Sample export: {export}  ({r['read']:,} FHIR resources of {p['read']:,} patients)")
    console.print(f"Patients: {p['scored']:,} scored, {p['skipped']:,} skipped, {p['rejected']:,} rejected")
    for reason, n in list(c["patients_skipped_by_reason"].items())[:3]:
        console.print(f"  skipped {n:,}: {reason}", highlight=False)
    console.print("Results: " + ", ".join(f"{k} {v:,}" for k, v in c["results"].items()))
    console.print(f"Rejected input records: {c['rejects']:,} (reasons in {results / 'rejects.ndjson'})")
    console.print(f"\nResults are in {results}/ (FHIR NDJSON per type, manifest.json, outcomes.ndjson).")
    console.print(f"Review these patients in the dashboard (the same models, with their evidence):  "
                  f"medmeta dashboard --source {export}")
    console.print(f"[dim]{manifest['disclaimer']}[/dim]")

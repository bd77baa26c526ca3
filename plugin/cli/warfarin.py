"""``medmeta warfarin``: train the shipped warfarin dose model, and score it against the clinical baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Warfarin dose from genotype and clinical records (decision support, not orders).",
                  no_args_is_help=True)

Input = Annotated[Path, typer.Option("--input", help="A CSV file in the IWPC layout (PharmGKB warfarin data).",
                                     exists=False)]


def _load(path: Path):
    from medmeta.datasets.warfarin import load_iwpc

    frame, rejected = load_iwpc(path)
    return frame, rejected


@app.command("eval")
def evaluate(
    input: Input,
    json_out: Annotated[Path, typer.Option("--json", help="Where to write the results (JSON).")],
    model: Annotated[Path | None, typer.Option(help="Model folder (default: the shipped model).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CIs.")] = 1000,
) -> None:
    """Score the model and the baselines (fixed 35 mg/week, IWPC clinical, IWPC pharmacogenetic) on the same
    patients of INPUT: MAE and % within 20%, overall, per dose band and per race, with 95% CIs."""
    import torch
    from rich.console import Console

    from medmeta.models import model_dir
    from medmeta.treatment.warfarin import WarfarinDoseModel
    from medmeta.treatment.warfarin_eval import evaluate as run

    torch.set_num_threads(1)
    frame, rejected = _load(input)
    folder = model or model_dir("warfarin")
    result = {"input": str(input), "model": str(folder), "rows_rejected": len(rejected),
              "rejections": [r.to_dict() for r in rejected[:100]],
              **run(frame, WarfarinDoseModel.load(folder), n_boot=bootstrap)}
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n")
    console = Console()
    console.print(f"{result['patients_with_dose']} patients with a dose scored; {len(rejected)} rows rejected.")
    for method, entry in result["methods"].items():
        o = entry["overall"]
        console.print(f"  {method:22s} MAE {o['mae']['value']:6.2f} mg/week {o['mae']['ci95']}   "
                      f"within 20% {o['within20']['value']:5.1f}% {o['within20']['ci95']}")
    console.print(f"Results: {json_out}")
    console.print(f"[dim]{result.get('disclaimer', '')}[/dim]")


@app.command("suggest")
def suggest(
    input: Annotated[str, typer.Option("--input", help="FHIR source: Bulk export folder, Bundle file or folder, or "
                                       "server URL (for example the output of `medmeta fhir from-iwpc`).")],
    output: Annotated[Path, typer.Option("--output", help="Folder for MedicationRequest.ndjson and skipped.csv.")],
    model: Annotated[Path | None, typer.Option(help="Model folder (default: the shipped model).")] = None,
    token: Annotated[str | None, typer.Option(envvar="MEDMETA_FHIR_TOKEN", help="Bearer token for a server.",
                                              show_default=False)] = None,
) -> None:
    """Suggest a weekly warfarin dose for every patient of a FHIR source with a warfarin indication, genotype or
    warfarin record: one MedicationRequest proposal each (intent=proposal, with its prediction interval, the
    factors that moved the dose and the genotype Observations it used). Decision support, not orders."""
    import csv
    from datetime import UTC, datetime

    import torch
    from rich.console import Console

    from medmeta.fhir import read, write_ndjson
    from medmeta.scoring.warfarin import WarfarinScorer

    torch.set_num_threads(1)
    tables = read(input, token=token)
    scores = WarfarinScorer(model).score(tables, run_time=datetime.now(UTC).isoformat(timespec="seconds"))
    counts = write_ndjson((r for rs in scores.results.values() for r in rs), output)
    with (output / "skipped.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "reason"])
        w.writerows(sorted(scores.skipped.items()))
    console = Console()
    console.print(f"{len(tables.patients):,} patients read: {len(scores.results):,} dose proposals, "
                  f"{len(scores.skipped):,} skipped (see skipped.csv); {tables.counts.summary()}", highlight=False)
    console.print(f"Proposals: {output / 'MedicationRequest.ndjson'} ({counts.get('MedicationRequest', 0):,})")
    console.print("[dim]Decision support for a clinician, not orders.[/dim]")
    raise typer.Exit(1 if tables.rejected else 0)


@app.command("train")
def train(
    input: Input,
    output: Annotated[Path, typer.Option(help="Model folder to write (config.json, model.safetensors).")],
    seed: int = 0,
) -> None:
    """Meta-train the warfarin dose model on every dosed patient of INPUT (deterministic for a given seed)."""
    import torch
    from rich.console import Console

    from medmeta.treatment.warfarin import WarfarinDoseModel

    torch.set_num_threads(1)
    frame, rejected = _load(input)
    model = WarfarinDoseModel(seed=seed).fit(frame)
    model.save(output)
    t = model.training_
    Console().print(f"Trained on {t['patients']} patients ({t['groups']} groups; {len(rejected)} rows rejected); "
                    f"out-of-fold MAE {t['out_of_fold_mae']:.2f} mg/week. Model: {output}")

"""``medmeta cgm``: train the shipped glucose forecaster, and score it on any CGM file against the baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Per-subject glucose forecasting from CGM series (decision support, not orders).",
                  no_args_is_help=True)

Input = Annotated[Path, typer.Option("--input", help="A CGM CSV file in the iglu layout: id,time,gl (mg/dL).")]
Source = Annotated[str, typer.Option("--input", help="A CGM CSV file in the iglu layout (id,time,gl; mg/dL), or a "
                                     "FHIR source with CGM Observations (LOINC 99504-3/105272-9): Bulk export folder, "
                                     "Bundle file or folder, or server URL.")]


def load_series(source: str):
    """CGM series and rejected records from a CSV file (``.csv``) or any FHIR source."""
    from medmeta.datasets.cgm import load_cgm

    if source.lower().endswith(".csv"):
        return load_cgm(source)
    from medmeta.fhir import read
    from medmeta.fhir.cgm import cgm_series

    tables = read(source)
    return cgm_series(tables), tables.rejected


@app.command("eval")
def evaluate(
    input: Source,
    json_out: Annotated[Path, typer.Option("--json", help="Where to write the results (JSON).")],
    adapt_hours: Annotated[float, typer.Option(help="Hours at the start of each subject's series to adapt on.")] = 24.0,
    horizon: Annotated[int, typer.Option(help="Forecast horizon in minutes (a multiple of 5, up to 60).")] = 30,
    model: Annotated[Path | None, typer.Option(help="Model folder (default: the shipped model).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CIs.")] = 1000,
) -> None:
    """Adapt the meta-trained model to each subject of INPUT on its first hours, then score it, persistence, a
    population AR model (leave-one-subject-out) and a per-subject AR model on the same later points."""
    import torch
    from rich.console import Console

    from medmeta.errors import DataError
    from medmeta.models import model_dir
    from medmeta.treatment.glucose import ARForecaster, GlucoseForecaster
    from medmeta.treatment.glucose_eval import evaluate as run

    torch.set_num_threads(1)
    series, rejected = load_series(input)
    folder = model or model_dir("glucose")
    forecaster = GlucoseForecaster.load(folder)
    if horizon not in forecaster.horizons:
        raise DataError(f"--horizon {horizon} is not one the model forecasts ({forecaster.horizons} minutes)")
    shipped_population = ARForecaster.from_dict(forecaster.config_["population_ar"])
    result = {"input": str(input), "model": str(folder), "rows_rejected": len(rejected),
              "rejections": [r.to_dict() for r in rejected[:100]],
              **run(forecaster, series, adapt_hours=adapt_hours, horizon=horizon, population=shipped_population,
                    n_boot=bootstrap)}
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n")
    console = Console()
    console.print(f"{result['subjects_scored']} of {result['subjects']} subjects scored at {horizon} min "
                  f"({len(rejected)} rows rejected).")
    for sid, reason in result["skipped"].items():
        console.print(f"  skipped {sid}: {reason}")
    for method, s in result["methods"].items():
        if s.get("n"):
            console.print(f"  {method:20s} RMSE {s['rmse']:6.2f}  MAE {s['mae']:6.2f} mg/dL  "
                          f"Clarke A {s['clarke_a']:5.1f}%  A+B {s['clarke_ab']:5.1f}%  (n={s['n']})")
    console.print(f"Results: {json_out}")
    console.print(f"[dim]{result['disclaimer']}[/dim]")


@app.command("train")
def train(
    input: Input,
    output: Annotated[Path, typer.Option(help="Model folder to write (config.json, model.safetensors).")],
    seed: int = 0,
) -> None:
    """Meta-train the glucose forecaster on every subject of INPUT (deterministic for a given seed)."""
    import torch
    from rich.console import Console

    from medmeta.datasets.cgm import load_cgm
    from medmeta.treatment.glucose import ARForecaster, GlucoseForecaster

    torch.set_num_threads(1)
    series, rejected = load_cgm(input)
    model = GlucoseForecaster(seed=seed).fit(list(series.values()))
    population = ARForecaster().fit([p for p in (model.points(s) for s in series.values()) if len(p)])
    model.save(output, extra={"population_ar": population.to_dict(), "trained_on": str(Path(input).name)})
    t = model.training_
    Console().print(f"Meta-trained on {t['subjects']} subjects ({t['points']} forecast points, {len(rejected)} rows "
                    f"rejected) in {model.seconds_:.0f} s. Model: {output}")

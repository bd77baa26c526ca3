"""``medmeta hba1c``: the next HbA1c from a patient's FHIR history (synthetic training data; not causal)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Next HbA1c from FHIR records, adapted per patient (decision support, not orders).",
                  no_args_is_help=True)

Source = Annotated[str, typer.Option("--input", help="FHIR source: Bundle file or folder, Bulk export folder or "
                                     "server URL.")]
Support = Annotated[int, typer.Option(help="Results per patient to adapt on (the support set).")]


def _tasks(source: str, k: int):
    from medmeta.fhir import patient_tasks, read

    return patient_tasks(read(source), k_support=k)


@app.command("eval")
def evaluate(
    input: Source,
    json_out: Annotated[Path, typer.Option("--json", help="Where to write the results (JSON).")],
    k: Support = 3,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CIs.")] = 1000,
) -> None:
    """5-fold patient-level cross-validation: medmeta adapted on each patient's first K results vs the last value
    and a population model, on the same later results."""
    import torch
    from rich.console import Console

    from medmeta.treatment.hba1c import evaluate as run

    torch.set_num_threads(1)
    start = time.monotonic()
    tasks = _tasks(input, k)
    result = {"input": input, **run(tasks, n_boot=bootstrap)}
    result.update({"command": f"medmeta hba1c eval --input {input} --json {json_out} --k {k} --bootstrap {bootstrap}",
                   "machine": f"{platform.machine()}, 1 torch thread, {platform.platform()}",
                   "seconds": round(time.monotonic() - start, 1)})
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n")
    console = Console()
    console.print(f"{result['patients']} patients with {k} results to adapt on and later ones to forecast; "
                  f"{result['query_results']} later results scored.")
    for m, v in result["methods"].items():
        console.print(f"  {m:20s} MAE {v['mae']['value']:.3f} {v['mae']['ci95']}  RMSE {v['rmse']['value']:.3f}")
    console.print(f"Results: {json_out}")
    console.print(f"[dim]{result['disclaimer']}[/dim]")


@app.command("train")
def train(
    input: Source,
    output: Annotated[Path, typer.Option(help="Model folder to write (config.json, model.safetensors).")],
    k: Support = 3,
    seed: int = 0,
) -> None:
    """Meta-train on every patient of INPUT; the 80% interval comes from cross-validated residuals."""
    import torch
    from rich.console import Console

    from medmeta.treatment.hba1c import HbA1cForecaster
    from medmeta.treatment.hba1c import evaluate as run

    torch.set_num_threads(1)
    tasks = _tasks(input, k)
    cv = run(tasks, n_boot=200, seed=seed)
    model = HbA1cForecaster(seed=seed).fit(tasks)
    model.save(output, extra={"k_support": k, "interval80_residual": cv["interval80"],
                              "cross_validation": {m: v["mae"] for m, v in cv["methods"].items()},
                              "trained_on": Path(input).name})
    maes = ", ".join(f"{m} {v['mae']['value']:.3f}" for m, v in cv["methods"].items())
    Console().print(f"Meta-trained on {len(tasks)} patients. Cross-validated MAE: {maes}. Model: {output}")

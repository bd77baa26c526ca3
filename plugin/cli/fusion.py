"""``medmeta fusion``: train, evaluate and apply the multimodal fusion models of the real tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Multimodal fusion (clinical record, genotype, lab histories, medications; any subset). "
                       "Decision support, not orders.", no_args_is_help=True)

Task = Annotated[str, typer.Option("--task", help="warfarin (IWPC CSV or FHIR) or diabetes (FHIR).")]
Input = Annotated[str, typer.Option("--input", help="warfarin: a CSV in the IWPC layout or a FHIR source; "
                                                    "diabetes: a FHIR source (Bundles, Bulk NDJSON folder).")]
Model = Annotated[Path | None, typer.Option("--model", help="Model folder (default: the shipped model of the task).")]


def _model(task: str, folder: Path | None):
    from medmeta.errors import DataError
    from medmeta.fusion.model import FusionModel
    from medmeta.models import model_dir

    if folder is None:
        if task != "warfarin":
            raise DataError(f"no shipped {task} fusion model (the only data here are synthetic): pass --model",
                            field="--model")
        folder = model_dir("warfarin_fusion")
    return FusionModel.load(folder), folder


@app.command("train")
def train(task: Task, input: Input,
          output: Annotated[Path, typer.Option(help="Model folder to write (config.json, model.safetensors, "
                                                    "README.md).")],
          seed: int = 0) -> None:
    """Train the task's fusion model on every example of INPUT with a known target (deterministic for a seed)."""
    import torch
    from rich.console import Console

    from medmeta.fusion import recipes

    torch.set_num_threads(1)
    data = recipes.load(task, input)
    model = recipes.train(task, data, seed=seed)
    model.save(output)
    command = f"medmeta fusion train --task {task} --input {input} --output {output}" + (f" --seed {seed}" if seed
                                                                                          else "")
    (Path(output) / "README.md").write_text(recipes.model_card(task, model, command))
    t = model.training_
    Console().print(f"Trained on {t['patients']} examples ({len(data.rejected)} input records or values rejected); "
                    f"modalities present: {t['modalities_present']}. Model: {output}")


@app.command("eval")
def evaluate(task: Task, input: Input,
             json_out: Annotated[Path, typer.Option("--json", help="Where to write the results (JSON).")],
             model: Model = None,
             bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples (over patients) for the 95% CIs.")]
             = 1000) -> None:
    """Score the fused model and the clinical references on the same examples of INPUT: overall, per set of
    modalities the patients had, with each modality withheld, and the interval coverage."""
    import torch
    from rich.console import Console

    from medmeta.fusion import recipes
    from medmeta.fusion.evaluation import evaluate_model
    from medmeta.fusion.inference import DISCLAIMER

    torch.set_num_threads(1)
    fused, folder = _model(task, model)
    data = recipes.load(task, input)
    metrics = ("mae", "within20") if task == "warfarin" else ("mae", "rmse")
    result = {"task": task, "input": str(input), "model": str(folder),
              "records_rejected": len(data.rejected), "rejections": [r.to_dict() for r in data.rejected[:100]],
              **evaluate_model(fused, data, recipes.baselines(task, data, fused), metrics=metrics, n_boot=bootstrap),
              "disclaimer": DISCLAIMER}
    if task == "diabetes":
        result["note"] = "Synthea data are synthetic; associations are not causal effects."
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n")
    console = Console()
    console.print(f"{result['examples_scored']} examples scored ({result['examples_without_target']} without a "
                  f"target, {result['examples_without_any_modality']} without any modality).")
    for method, entry in result["methods"].get("all", {}).items():
        console.print(f"  {method:22s} MAE {entry['mae']['value']:.3f} {entry['mae']['ci95']}")
    console.print(f"Results: {json_out}")


@app.command("predict")
def predict(task: Task, input: Input,
            output: Annotated[Path, typer.Option(help="Where to write the predictions (JSON).")],
            model: Model = None) -> None:
    """One prediction per patient (or HbA1c measurement) of INPUT, with its interval and the modalities it used."""
    import torch
    from rich.console import Console

    from medmeta.fusion import recipes
    from medmeta.fusion.inference import predict_multimodal

    torch.set_num_threads(1)
    fused, folder = _model(task, model)
    data = recipes.load(task, input)
    predictions, rejected = predict_multimodal(fused, data.x)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"model": str(folder), "predictions": [p.to_dict() for p in predictions],
                                  "rejected": [r.to_dict() for r in data.rejected + rejected]}, indent=2) + "\n")
    Console().print(f"{len(predictions)} predictions, {len(data.rejected) + len(rejected)} rejected. "
                    f"Results: {output}")

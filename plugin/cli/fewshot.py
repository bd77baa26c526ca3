"""``medmeta fewshot``: train and evaluate the few-shot bundles; keep and query a support memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medmeta.cli.options import DataDir

app = typer.Typer(help="Few-shot image diagnosis: MONAI bundles and the support memory.", no_args_is_help=True)
memory_app = typer.Typer(help="The support memory: add cases, predict with evidence, show what it holds.",
                         no_args_is_help=True)
app.add_typer(memory_app, name="memory")

Bundle = Annotated[Path, typer.Option("--bundle", help="A few-shot MONAI bundle folder (monai_bundles/...).",
                                      exists=True, file_okay=False)]


@app.command("eval")
def evaluate(
    bundle: Bundle,
    data: Annotated[Path, typer.Option("--data", help="A MedMNIST-layout .npz file (grey or colour, any size).",
                                       exists=True, dir_okay=False)],
    ways: Annotated[int, typer.Option("--ways", help="Classes per episode (N).")],
    shots: Annotated[int, typer.Option("--shots", help="Labelled examples per class (K).")],
    split: Annotated[str, typer.Option("--split", help="train, val or test.")] = "test",
    episodes: Annotated[int, typer.Option("--episodes", help="Episodes to average over.")] = 600,
    queries: Annotated[int, typer.Option("--queries", help="Query images per class and episode (fewer for a "
                                         "class that has fewer than shots + queries images).")] = 15,
    seed: Annotated[int, typer.Option(help="Seed of the episodes.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here as JSON.")] = None,
) -> None:
    """Few-shot accuracy of a bundle on any MedMNIST-layout file: mean over episodes with its 95% CI."""
    from medmeta.evaluation import evaluate_file

    result = evaluate_file(bundle, data, split=split, ways=ways, shots=shots, episodes=episodes, queries=queries,
                           seed=seed)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1))
    console = Console()
    console.print(f"{result['learner']} on {data.name} ({split}): {ways}-way {shots}-shot, {result['episodes']} "
                  f"episodes: accuracy {100 * result['accuracy']:.1f}% ± {100 * result['ci95']:.1f} (95% CI)")
    for name, n in result["short_classes"].items():
        console.print(f"  note: class {name!r} has too few images for {queries} queries; its episodes use {n}")
    console.print(f"[dim]{result['disclaimer']}[/dim]")


@app.command("train")
def train(
    bundle: Bundle,
    data_dir: DataDir = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's choice).")] = None,
) -> None:
    """Train a bundle's network with its configs/train.json (MONAI's bundle workflow); writes models/model.pt."""
    from monai.bundle import ConfigWorkflow

    overrides = {"data_dir": str(data_dir) if data_dir else None, "threads": threads}
    workflow = ConfigWorkflow(config_file=str(bundle / "configs" / "train.json"), workflow_type=None,
                              meta_file=str(bundle / "configs" / "metadata.json"), logging_file=False,
                              bundle_root=str(bundle.resolve()), **overrides)
    workflow.initialize()
    summary = workflow.run()[-1]
    workflow.finalize()
    Console().print(f"Trained {summary['learner']} in {summary['seconds']:.0f} s; wrote {bundle / 'models'}.")


@memory_app.command("add")
def memory_add(
    bundle: Bundle,
    memory: Annotated[Path, typer.Option("--memory", help="The memory folder (created if missing).")],
    label: Annotated[str, typer.Option("--label", help="The class of these images.")],
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, ...), one case each.",
                                                 exists=True, dir_okay=False)],
    note: Annotated[str, typer.Option(help="Why these cases were added (kept in the history).")] = "",
) -> None:
    """Store labelled cases in the memory; the next prediction uses them (no retraining)."""
    from medmeta.bundle import load_bundle
    from medmeta.imaging import read_images
    from medmeta.memory import SupportMemory

    store = SupportMemory(memory, load_bundle(bundle))
    version = store.add(read_images(images), label, [p.name for p in images], note=note)
    Console().print(f"Memory {memory} is now version {version}: {store.classes}")


@memory_app.command("predict")
def memory_predict(
    bundle: Bundle,
    memory: Annotated[Path, typer.Option("--memory", help="The memory folder.", exists=True, file_okay=False)],
    images: Annotated[list[Path], typer.Argument(help="Image files to classify.", exists=True, dir_okay=False)],
    top_k: Annotated[int, typer.Option("--top-k", help="Similar stored cases to show as evidence.")] = 5,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the predictions here as JSON.")] = None,
) -> None:
    """Class probabilities, predicted class and the most similar stored cases, for each image."""
    from medmeta.bundle import load_bundle
    from medmeta.imaging import read_images
    from medmeta.memory import SupportMemory

    predictions = SupportMemory(memory, load_bundle(bundle)).predict(read_images(images), top_k=top_k)
    rows = [{"image": str(path), **p.to_dict()} for path, p in zip(images, predictions, strict=True)]
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))
    console = Console()
    for row in rows:
        best = max(row["probabilities"].values())
        similar = ", ".join(f"{e['label']} {e['similarity']:.2f}" for e in row["evidence"])
        console.print(f"{Path(row['image']).name}: {row['predicted']} (p={best:.2f}); similar cases: {similar}")
    console.print(f"[dim]{predictions[0].disclaimer if predictions else ''}[/dim]")


@memory_app.command("export")
def memory_export(
    bundle: Bundle,
    memory: Annotated[Path, typer.Option("--memory", help="The memory folder.", exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="The new bundle folder (must not exist).")],
) -> None:
    """A copy of the bundle that classifies the memory's classes (for MONAI's tools and batch jobs)."""
    from medmeta.bundle import export, load_bundle
    from medmeta.memory import SupportMemory

    store = SupportMemory(memory, load_bundle(bundle))
    export(bundle, store, out)
    Console().print(f"Wrote {out}: {len(store.classes)} classes from version {store.version} of {memory}.")


@memory_app.command("show")
def memory_show(
    bundle: Bundle,
    memory: Annotated[Path, typer.Option("--memory", help="The memory folder.", exists=True, file_okay=False)],
) -> None:
    """Classes, case counts and the history of versions."""
    from medmeta.bundle import load_bundle
    from medmeta.memory import SupportMemory

    store = SupportMemory(memory, load_bundle(bundle))
    console = Console()
    console.print(f"Version {store.version}, {len(store)} cases: {store.classes}")
    for h in store.history():
        console.print(f"  v{h['version']} {h['created']} {h['change']}")

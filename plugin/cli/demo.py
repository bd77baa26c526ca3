"""``medmeta demo``: the main job on the embedded sample data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medmeta.cli.options import DataDir


def demo(
    output: Annotated[Path, typer.Option(help="Where to write the model and results.json.")] = Path("runs/demo"),
    data_dir: DataDir = None,
    budget_seconds: Annotated[float, typer.Option(help="Meta-training time budget.")] = 60.0,
    episodes: Annotated[int, typer.Option(help="Evaluation episodes per benchmark.")] = 200,
    shots: Annotated[int, typer.Option(help="Labelled examples per class (K).")] = 5,
    seed: int = 0,
    quick: Annotated[bool, typer.Option(help="A few seconds of training and 20 episodes (smoke test).")] = False,
) -> None:
    """Meta-train a Prototypical network, test it on data sets it never saw, save it."""
    from medmeta.demo import DemoConfig, run_demo

    if quick:
        budget_seconds, episodes = min(budget_seconds, 3.0), min(episodes, 20)
    cfg = DemoConfig(output=output, data_dir=data_dir, budget_seconds=budget_seconds, eval_episodes=episodes,
                     shots=shots, seed=seed)
    results = run_demo(cfg)

    console = Console()
    t = results["training"]
    console.print(f"Meta-trained for {t['seconds']:.0f} s ({t['episodes']} episodes).")
    table = Table(title=f"Few-shot accuracy, {shots}-shot (mean over episodes, 95% CI)")
    for column in ("benchmark", "ways", "episodes", "accuracy"):
        table.add_column(column)
    for e in results["evaluations"]:
        table.add_row(e["benchmark"], str(e["ways"]), str(e["episodes"]),
                      f"{100 * e['accuracy']:.1f}% ± {100 * e['ci95']:.1f}")
    console.print(table)
    console.print(f"Model: {results['model']}   Results: {output / 'results.json'}")
    console.print(f"[dim]{results['disclaimer']}[/dim]")

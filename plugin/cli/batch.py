"""``medmeta batch``: score every patient of a FHIR source and write FHIR results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def batch(
    input: Annotated[str, typer.Option("--input", help="Bulk export folder, Bundle file or folder, or FHIR server URL "
                                       "(read with $export).")],
    output: Annotated[Path, typer.Option("--output", help="Folder for the results, manifest and rejects.")],
    post: Annotated[str | None, typer.Option("--post", help="FHIR server base URL to write the results to.")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Address of a dask.distributed scheduler "
                                                  "(tcp://host:8786); default: a local cluster.")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes of the local cluster.")] = 1,
    partitions: Annotated[int | None, typer.Option(help="Number of partitions (default: by input size).")] = None,
    dry_run: Annotated[bool, typer.Option(help="With --post: build and validate the Bundles, send nothing.")] = False,
    token: Annotated[str | None, typer.Option(envvar="MEDMETA_FHIR_TOKEN", help="Bearer token for the server(s).",
                                              show_default=False)] = None,
    scorers: Annotated[str | None, typer.Option(help="The models to run, as module:function returning scorers "
                                                "(default: medmeta.scoring:default_scorers). "
                                                "medmeta.scoring.fusion:scorers runs the fused warfarin model "
                                                "(and the glucose forecast) instead of the warfarin model.",
                                                show_default=False)] = None,
) -> None:
    """Run every model that applies to each patient; write RiskAssessment, MedicationRequest proposals,
    Observations and one Provenance as NDJSON, with rejects and a manifest. A killed run resumes
    when started again with the same arguments. Exit status 1 if any input was rejected or a model failed."""
    from medmeta.batch import BatchConfig, run_batch

    cfg = BatchConfig(source=input, output=output, post=post, token=token, scheduler=scheduler, workers=workers,
                      partitions=partitions, dry_run=dry_run,
                      **({"scorers": scorers} if scorers else {}))
    manifest = run_batch(cfg)
    c = manifest["counts"]
    console = Console()
    p = c["patients"]
    console.print(f"Patients: read {p['read']:,} = scored {p['scored']:,} + skipped {p['skipped']:,} "
                  f"+ rejected {p['rejected']:,}")
    for reason, n in list(c["patients_skipped_by_reason"].items())[:5]:
        console.print(f"  skipped {n:,}: {reason}", highlight=False)
    r = c["resources"]
    console.print(f"Resources: read {r['read']:,} = used {r['used']:,} + ignored {r['ignored']:,} "
                  f"+ rejected {r['rejected']:,}")
    console.print("Results: " + ", ".join(f"{k} {v:,}" for k, v in c["results"].items()))
    if "write_back" in manifest:
        w = manifest["write_back"]
        console.print(f"Write-back to {w['url']}: {w['resources']:,} resources in {w['bundles']} Bundles"
                      + (" (dry run, nothing sent)" if w["dry_run"] else ""))
    for model, error in manifest["model_errors"].items():
        console.print(f"[red]model {model} failed on {error['patients']:,} patient(s)[/red] (each in "
                      "outcomes.ndjson; the others were scored)", highlight=False)
    console.print(f"Output: {output}  (manifest.json, rejects.ndjson, outcomes.ndjson)")
    console.print(f"[dim]{manifest['disclaimer']}[/dim]")
    if c["rejects"] or manifest["model_errors"]:
        raise typer.Exit(1)

"""``medmeta fhir``: read FHIR sources into tables, convert the IWPC data to FHIR and back, post results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="FHIR R4 in and out: read Bundles, Bulk NDJSON or a server; convert IWPC; post results.",
                  no_args_is_help=True)

Token = Annotated[str | None, typer.Option("--token", envvar="MEDMETA_FHIR_TOKEN",
                                           help="Bearer token for the FHIR server.", show_default=False)]


def _report(console: Console, tables, out: Path) -> None:
    c = tables.counts
    console.print(c.summary())
    for rtype, n in sorted(c.read.items()):
        console.print(f"  {rtype}: read {n:,}, used {c.used[rtype]:,}, ignored {c.ignored[rtype]:,}, "
                      f"rejected {c.rejected[rtype]:,}", highlight=False)
    if c.skipped_files:
        console.print(f"  {len(c.skipped_files)} file(s) not read (see counts.json)")
    if len(tables.unmapped):
        console.print(f"  {int(tables.unmapped['count'].sum()):,} codes or units kept as they were "
                      f"(see {out / 'unmapped.csv'})")
    if tables.rejected:
        console.print(f"[yellow]{len(tables.rejected):,} rejected[/yellow]: reasons in {out / 'rejects.csv'}")


@app.command("read")
def read_command(
    source: Annotated[str, typer.Argument(help="Bundle file, folder (Bundles or Bulk NDJSON) or server URL.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the tables, rejects.csv, counts.json.")],
    bulk: Annotated[bool, typer.Option(help="Read a server with Bulk Data $export instead of search.")] = False,
    token: Token = None,
) -> None:
    """Read a FHIR source into normalised tables (CSV). Exit status 1 if anything was rejected."""
    from medmeta.fhir import read, write_tables

    tables = read(source, token=token, bulk=bulk)
    write_tables(tables, out)
    _report(Console(), tables, out)
    raise typer.Exit(1 if tables.rejected else 0)


@app.command("from-iwpc")
def from_iwpc(
    csv: Annotated[Path, typer.Argument(help="The IWPC warfarin CSV (PharmGKB layout).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the Bulk NDJSON files and manifest.")],
) -> None:
    """Write every IWPC patient as FHIR R4 Bulk NDJSON. Rejected CSV rows go to rejects.csv (exit status 1)."""
    import csv as csvlib

    from medmeta.datasets.warfarin import load_iwpc
    from medmeta.fhir import iwpc_resources, write_ndjson

    frame, rejected = load_iwpc(csv)
    counts = write_ndjson((r for row in frame.to_dict("records") for r in iwpc_resources(row)), out)
    with (out / "rejects.csv").open("w", newline="") as f:
        w = csvlib.writer(f)
        w.writerow(["source", "row", "record_id", "field", "reason"])
        w.writerows([r.source, r.row, r.record_id, r.field, r.reason] for r in rejected)
    console = Console()
    console.print(f"{len(frame) + len(rejected):,} CSV rows = {len(frame):,} patients written + "
                  f"{len(rejected):,} rejected", highlight=False)
    console.print(", ".join(f"{k} {n:,}" for k, n in sorted(counts.items())) + f" -> {out}", highlight=False)
    if rejected:
        console.print(f"[yellow]rejected rows[/yellow] (reasons in {out / 'rejects.csv'}):")
        for r in rejected[:10]:
            console.print(f"  {r}", highlight=False)
    raise typer.Exit(1 if rejected else 0)


@app.command("from-cgm")
def from_cgm(
    csv: Annotated[Path, typer.Argument(help="A CGM CSV in the iglu layout (id,time,gl).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the Bulk NDJSON files and manifest.")],
    unit: Annotated[str, typer.Option(help="Glucose unit of the file: mg/dL or mmol/L.")] = "mg/dL",
) -> None:
    """Write each CGM subject as a Patient and one Observation per reading (LOINC 99504-3, mg/dL).
    Rejected CSV rows go to rejects.csv (exit status 1)."""
    import csv as csvlib

    from medmeta.datasets.cgm import load_cgm
    from medmeta.fhir import write_ndjson
    from medmeta.fhir.cgm import cgm_resources

    series, rejected = load_cgm(csv, unit=unit)
    counts = write_ndjson((r for s in series.values() for r in cgm_resources(s)), out)
    with (out / "rejects.csv").open("w", newline="") as f:
        w = csvlib.writer(f)
        w.writerow(["source", "row", "record_id", "field", "reason"])
        w.writerows([r.source, r.row, r.record_id, r.field, r.reason] for r in rejected)
    readings = sum(len(s) for s in series.values())
    Console().print(f"{readings + len(rejected):,} CSV rows = {readings:,} readings of {len(series)} subjects "
                    f"written + {len(rejected):,} rejected; " + ", ".join(f"{k} {n:,}" for k, n in sorted(
                        counts.items())) + f" -> {out}", highlight=False)
    raise typer.Exit(1 if rejected else 0)


@app.command("to-iwpc")
def to_iwpc(
    source: Annotated[str, typer.Argument(help="FHIR source (as for `medmeta fhir read`).")],
    out: Annotated[Path, typer.Option("--out", help="CSV file with the IWPC columns, one row per patient.")],
    token: Token = None,
) -> None:
    """Read a FHIR source into the warfarin model's columns (those of the IWPC loader)."""
    from medmeta.fhir import iwpc_frame, read

    tables = read(source, token=token)
    out.parent.mkdir(parents=True, exist_ok=True)
    iwpc_frame(tables).to_csv(out, index=False)
    _report(Console(), tables, out.parent)
    raise typer.Exit(1 if tables.rejected else 0)


@app.command("post")
def post(
    folder: Annotated[Path, typer.Argument(help="Folder of NDJSON resources (e.g. medmeta results).")],
    url: Annotated[str, typer.Option("--url", help="Base URL of the FHIR server.")],
    chunk_size: Annotated[int, typer.Option(help="Resources per transaction Bundle.")] = 500,
    token: Token = None,
) -> None:
    """Validate the resources of a folder and POST them to a server as transaction Bundles."""
    from medmeta.fhir import post_resources
    from medmeta.fhir.sources import iter_entries, list_files

    files = list_files(folder)
    responses = post_resources((e.resource for e in iter_entries(files.files) if e.resource is not None), url,
                               token=token, chunk_size=chunk_size)
    n = sum(len(b.get("entry") or []) for b in responses)
    Console().print(f"posted {n:,} resources in {len(responses)} transaction Bundle(s) to {url}")

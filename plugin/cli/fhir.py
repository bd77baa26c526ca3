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


def _report(console: Console, tables, rejects: Path, unmapped: Path) -> None:
    c = tables.counts
    console.print(c.summary())
    for rtype, n in sorted(c.read.items()):
        console.print(f"  {rtype}: read {n:,}, used {c.used[rtype]:,}, ignored {c.ignored[rtype]:,}, "
                      f"rejected {c.rejected[rtype]:,}", highlight=False)
    if c.skipped_files:
        console.print(f"  {len(c.skipped_files)} file(s) not read (see counts.json)")
    if len(tables.unmapped):
        console.print(f"  {int(tables.unmapped['count'].sum()):,} codes or units kept as they were "
                      f"(see {unmapped})")
    if tables.rejected:
        console.print(f"[yellow]{len(tables.rejected):,} rejected[/yellow]: reasons in {rejects}")


@app.command("read")
def read_command(
    source: Annotated[str, typer.Argument(help="Bundle file, folder (Bundles or Bulk NDJSON) or server URL.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the tables, rejects.csv, counts.json.")],
    bulk: Annotated[bool, typer.Option(help="Read a server with Bulk Data $export instead of search "
                                              "(the exported files are kept in OUT/export).")] = False,
    token: Token = None,
) -> None:
    """Read a FHIR source into normalised tables (CSV). Exit status 1 if anything was rejected."""
    from medmeta.fhir import read, write_tables

    tables = read(source, token=token, bulk=bulk, export_to=out / "export" if bulk else None)
    paths = write_tables(tables, out)
    _report(Console(), tables, paths["rejects"], paths["unmapped"])
    raise typer.Exit(1 if tables.rejected else 0)


@app.command("from-iwpc")
def from_iwpc(
    csv: Annotated[Path, typer.Argument(help="The IWPC warfarin CSV (PharmGKB layout).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the Bulk NDJSON files and manifest.")],
) -> None:
    """Write every IWPC patient as FHIR R4 Bulk NDJSON. Rejected CSV rows go to rejects.csv (exit status 1)."""
    from medmeta.datasets.warfarin import load_iwpc
    from medmeta.errors import write_rejects
    from medmeta.fhir import iwpc_resources, write_ndjson

    frame, rejected = load_iwpc(csv)
    counts = write_ndjson((r for row in frame.to_dict("records") for r in iwpc_resources(row)), out)
    write_rejects(out / "rejects.csv", rejected)
    console = Console()
    console.print(f"{len(frame) + len(rejected):,} CSV rows = {len(frame):,} patients written + "
                  f"{len(rejected):,} rejected", highlight=False)
    console.print(", ".join(f"{k} {n:,}" for k, n in sorted(counts.items())) + f" -> {out}", highlight=False)
    _print_rejected_rows(console, rejected, out / "rejects.csv")
    raise typer.Exit(1 if rejected else 0)


def _print_rejected_rows(console: Console, rejected: list, path: Path) -> None:
    """Where the first rejected rows are (line and field only: their values and ids stay in the file)."""
    if rejected:
        where = "; ".join(f"line {r.row}" + (f" ({r.field})" if r.field else "") for r in rejected[:10])
        more = f" and {len(rejected) - 10:,} more" if len(rejected) > 10 else ""
        console.print(f"[yellow]rejected rows[/yellow]: {where}{more}; reasons in {path}", highlight=False)


@app.command("from-cgm")
def from_cgm(
    csv: Annotated[Path, typer.Argument(help="A CGM CSV in the iglu layout (id,time,gl).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the Bulk NDJSON files and manifest.")],
    unit: Annotated[str, typer.Option(help="Glucose unit of the file: mg/dL or mmol/L.")] = "mg/dL",
) -> None:
    """Write each CGM subject as a Patient and one Observation per reading (LOINC 99504-3, mg/dL).
    Rejected CSV rows go to rejects.csv (exit status 1)."""
    from medmeta.datasets.cgm import load_cgm
    from medmeta.errors import write_rejects
    from medmeta.fhir import write_ndjson
    from medmeta.fhir.cgm import cgm_resources

    series, rejected = load_cgm(csv, unit=unit)
    counts = write_ndjson((r for s in series.values() for r in cgm_resources(s)), out)
    write_rejects(out / "rejects.csv", rejected)
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
    """Read a FHIR source into the warfarin model's columns (those of the IWPC loader); rejected records go
    to OUT.rejects.csv and codes kept as they were to OUT.unmapped.csv beside it (exit status 1 if any rejected)."""
    from medmeta.errors import write_rejects
    from medmeta.fhir import iwpc_frame, read

    tables = read(source, token=token)
    out.parent.mkdir(parents=True, exist_ok=True)
    iwpc_frame(tables).to_csv(out, index=False)
    rejects, unmapped = out.with_suffix(".rejects.csv"), out.with_suffix(".unmapped.csv")
    write_rejects(rejects, tables.rejected)
    tables.unmapped.to_csv(unmapped, index=False)
    _report(Console(), tables, rejects, unmapped)
    raise typer.Exit(1 if tables.rejected else 0)


@app.command("post")
def post(
    folder: Annotated[Path, typer.Argument(help="Folder of NDJSON resources (e.g. medmeta results).")],
    url: Annotated[str, typer.Option("--url", help="Base URL of the FHIR server.")],
    chunk_size: Annotated[int, typer.Option(help="Resources per transaction Bundle.")] = 500,
    token: Token = None,
) -> None:
    """Validate the resources of a folder and POST the valid ones to a server as transaction Bundles.

    Lines that cannot be parsed and invalid resources are not sent: they go to FOLDER/post-rejects.csv
    with file, line, id, field and reason (exit status 1). 429 and 5xx answers are retried.
    """
    from medmeta.errors import DataError, Rejection, write_rejects
    from medmeta.fhir import post_resources, validate_r4
    from medmeta.fhir.sources import iter_entries, list_files

    rejected: list[Rejection] = []

    def valid():
        for e in iter_entries(list_files(folder).files):
            if e.resource is None:
                rejected.append(Rejection(e.source, e.error or "unreadable", row=e.row))
                continue
            try:
                yield validate_r4(e.resource)
            except DataError as exc:
                r = exc.rejection
                rejected.append(Rejection(e.source, r.reason, row=e.row, field=r.field, record_id=r.record_id))

    responses = post_resources(valid(), url, token=token, chunk_size=chunk_size)
    n = sum(len(b.get("entry") or []) for b in responses)
    console = Console()
    console.print(f"read {n + len(rejected):,} = posted {n:,} (in {len(responses)} transaction Bundle(s) to {url}) "
                  f"+ rejected {len(rejected):,}", highlight=False)
    if rejected:
        path = write_rejects(folder / "post-rejects.csv", rejected)
        console.print(f"[yellow]{len(rejected):,} not sent[/yellow]: reasons in {path}")
    raise typer.Exit(1 if rejected else 0)

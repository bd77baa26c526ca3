"""The main job on the embedded sample data: a small hospital's FHIR export, scored by every model that applies.

1. :func:`build_sample_export` turns the samples into one FHIR source, as a hospital would hold them:
   the Synthea patient Bundles and the Bulk Data export as they are, the IWPC warfarin patients and the
   CGM subjects converted to FHIR (``medmeta fhir from-iwpc`` / ``from-cgm``);
2. the batch job (:func:`medmeta.batch.run_batch`) scores every patient and writes FHIR results, rejects
   and a manifest.

With ``data_dir`` (or ``MEDMETA_DATA``) the same runs on the full data.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmeta import paths


@dataclass
class DemoConfig:
    output: Path = Path("runs/demo")
    data_dir: Path | None = None
    workers: int = 1


def build_sample_export(out: Path, data_dir: Path | None = None) -> dict[str, Any]:
    """Write the sample FHIR source into ``out`` (once; what went into it is in ``<out>.json``) and return that."""
    from medmeta.datasets.cgm import load_cgm
    from medmeta.datasets.warfarin import load_iwpc
    from medmeta.fhir import iwpc_resources, write_ndjson
    from medmeta.fhir.cgm import cgm_resources

    done = out.with_suffix(".json")
    if done.exists():
        return json.loads(done.read_text())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(paths.data_path(paths.SYNTHEA_BUNDLES, data_dir), tmp / "synthea")
    shutil.copytree(paths.data_path(paths.BULK_EXPORT, data_dir), tmp / "bulk")
    frame, iwpc_rejected = load_iwpc(paths.data_path(paths.WARFARIN_CSV, data_dir))
    iwpc = write_ndjson((r for row in frame.to_dict("records") for r in iwpc_resources(row)), tmp / "iwpc")
    series, cgm_rejected = load_cgm(paths.data_path(paths.CGM_HALL_CSV, data_dir))
    cgm = write_ndjson((r for s in series.values() for r in cgm_resources(s)), tmp / "cgm")
    contents = {
        "synthea_bundles": len(list((tmp / "synthea").glob("*.json*"))),
        "bulk_export_files": len(list((tmp / "bulk").glob("*.ndjson*"))),
        "iwpc": {"patients": len(frame), "csv_rows_rejected": len(iwpc_rejected), "resources": iwpc},
        "cgm": {"subjects": len(series), "csv_rows_rejected": len(cgm_rejected), "resources": cgm},
    }
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    done.write_text(json.dumps(contents, indent=2))
    return contents


def run_demo(cfg: DemoConfig, *, show_progress: bool = True) -> dict[str, Any]:
    """Build the sample export under ``output/export`` and score it into ``output/results``; return the manifest."""
    from medmeta.batch import BatchConfig, run_batch

    output = Path(cfg.output)
    contents = build_sample_export(output / "export", cfg.data_dir)
    manifest = run_batch(BatchConfig(source=str(output / "export"), output=output / "results", workers=cfg.workers),
                         show_progress=show_progress)
    return {**manifest, "sample_export": contents}

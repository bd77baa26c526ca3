"""``medmeta dashboard``: the clinician dashboard (Streamlit), bound to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer


def dashboard(
    source: Annotated[str | None, typer.Option(help="FHIR source: Bulk export folder, Bundle file or folder, or "
                                               "server URL (default: the embedded sample export).")] = None,
    models: Annotated[Path | None, typer.Option(help="Folder laid out like models/ (warfarin/, glucose/); "
                                                "default: the shipped models.")] = None,
    bundles: Annotated[Path | None, typer.Option(help="Folder of few-shot MONAI bundles; default: the "
                                                 "repository's monai_bundles/.")] = None,
    audit_db: Annotated[Path | None, typer.Option(help="Audit log (SQLite); default MEDMETA_HOME/audit.sqlite.")
                        ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes it to the network.")] = "127.0.0.1",
    port: int = 8501,
) -> None:
    """Open the dashboard: patients, few-shot diagnosis with evidence, treatment suggestions, models, audit log."""
    import medmeta.dashboard

    env = dict(os.environ)
    for name, value in (("MEDMETA_DASHBOARD_SOURCE", source), ("MEDMETA_MODELS", models),
                        ("MEDMETA_BUNDLES", bundles), ("MEDMETA_AUDIT_DB", audit_db)):
        if value is not None:
            env[name] = str(value)
    app = Path(medmeta.dashboard.__file__).parent / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", host, "--server.port", str(port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    raise typer.Exit(subprocess.call(cmd, env=env))

"""Where the dashboard finds its FHIR source, models, bundles and audit log.

Set by ``medmeta dashboard`` (or the environment) before Streamlit starts:

- ``MEDMETA_DASHBOARD_SOURCE``: a FHIR source (Bulk export folder, Bundle file or folder, server URL);
  default: the embedded sample export, built once under ``MEDMETA_HOME``;
- ``MEDMETA_MODELS``: a folder laid out like ``models/`` (``warfarin/``, ``glucose/``, ``warfarin_fusion/``);
  default: the shipped models;
- ``MEDMETA_BUNDLES``: a folder of few-shot MONAI bundles; default: the repository's ``monai_bundles/``;
- ``MEDMETA_AUDIT_DB``: the audit log (SQLite); default ``MEDMETA_HOME/audit.sqlite``;
- ``MEDMETA_HOME``: medmeta's own working folder (default ``~/.cache/medmeta``): the sample export and the
  dashboard's support memories (``support-memory/<bundle>``) live there, never inside the installed package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    source: str | None
    models: Path | None
    audit_db: Path
    home: Path
    bundles: Path

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("MEDMETA_HOME", "~/.cache/medmeta")).expanduser()
        models = os.environ.get("MEDMETA_MODELS")
        bundles = os.environ.get("MEDMETA_BUNDLES")
        return cls(source=os.environ.get("MEDMETA_DASHBOARD_SOURCE") or None,
                   models=Path(models) if models else None,
                   audit_db=Path(os.environ.get("MEDMETA_AUDIT_DB") or home / "audit.sqlite"), home=home,
                   bundles=Path(bundles) if bundles else default_bundles())

    def model_folder(self, name: str) -> Path:
        """The folder of model ``name``: under ``models`` when set, else the shipped one."""
        from medmeta.models import model_dir

        return self.models / name if self.models else model_dir(name)


def default_bundles() -> Path:
    """The repository's ``monai_bundles/`` (next to the ``plugin/`` folder of an editable install)."""
    import medmeta

    return Path(medmeta.__file__).resolve().parent.parent / "monai_bundles"

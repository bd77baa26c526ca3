"""Options shared by several commands."""

from pathlib import Path
from typing import Annotated

import typer

from medmeta.paths import ENV_VAR

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar=ENV_VAR, help="Full data in the layout of shared/data "
                 "(default: the samples shipped with medmeta).", show_default=False),
]

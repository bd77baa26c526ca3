"""The models the batch job runs, wrapped as :class:`~medmeta.batch.scoring.Scorer` objects."""

from __future__ import annotations

from medmeta.batch.scoring import Scorer


def default_scorers() -> list[Scorer]:
    """Every shipped model that the batch job can run."""
    return []

"""Loaders for the data sets medmeta learns from, with errors that name file, line and field.

Every loader returns a :class:`Loaded` pair: the data, and the input records it
rejected with their reasons, so that nothing is silently dropped.
"""

from typing import Generic, NamedTuple, TypeVar

from medmeta.errors import Rejection

T = TypeVar("T")


class Loaded(NamedTuple, Generic[T]):
    """What a loader read: the usable ``data`` and the ``rejected`` records."""

    data: T
    rejected: list[Rejection]

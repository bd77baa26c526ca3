"""Progress reporting: a live bar on a terminal, plain log lines otherwise (CI, batch logs)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

log = logging.getLogger("medmeta")


class Advance(Protocol):
    def __call__(self, completed: float, status: str = "") -> None: ...


@contextmanager
def progress(description: str, total: float, *, interval_s: float = 10.0,
             force_terminal: bool | None = None) -> Iterator[Advance]:
    """Yield ``advance(completed, status)`` to report how far a job has come out of ``total``.

    On a terminal this draws a bar with the rate and time left; elsewhere it logs a line at
    most every ``interval_s`` seconds and one at the end.
    """
    terminal = sys.stderr.isatty() if force_terminal is None else force_terminal
    if terminal:
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task(description, total=total, status="")

            def advance(completed: float, status: str = "") -> None:
                bar.update(task, completed=min(completed, total), status=status)

            yield advance
        return

    last = [time.monotonic(), 0.0, ""]

    def advance(completed: float, status: str = "") -> None:
        now = time.monotonic()
        last[1], last[2] = completed, status
        if now - last[0] >= interval_s:
            last[0] = now
            log.info("%s: %.0f%% %s", description, 100 * min(completed, total) / total, status)

    yield advance
    log.info("%s: done %s", description, last[2])

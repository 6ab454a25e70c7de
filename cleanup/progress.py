"""How `manage.py cleanup` shows a run going: on a terminal, a rich progress bar with the run's
total and an ETA; otherwise (a pipe, a log file, `kubectl exec` without -t) a plain line a batch."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cleanup.base import Run
from supworker.terminal import logs_above_the_bar

Reporter = Callable[[Run], None]


def plain_line(run: Run) -> None:
    if not run.batches:
        return  # the start: nothing done yet
    done = ", ".join(f"{key} {value:,}" for key, value in sorted(run.counts.items()))
    of = f" ({run.done:,} of {run.total:,})" if run.total is not None else ""
    sys.stderr.write(f"{run.name}: batch {run.batches:,}: {done}{of}\n")
    sys.stderr.flush()


class Bar:
    """One rich task per run, created with the total the run starts with (None: an indeterminate bar)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def __call__(self, run: Run) -> None:
        if self.task is None:
            unit = " + ".join(run.progress_counts) or "batches"
            eta = "eta" if run.total is not None else ""  # no total, no estimate: rich leaves it blank
            self.task = self.progress.add_task(run.name, total=run.total, unit=unit, eta=eta)
        self.progress.update(self.task, completed=run.done)


@contextmanager
def reporter() -> Iterator[Reporter]:
    """The progress callback for a cleanup run: a bar when stderr is a terminal, else plain lines."""
    if not sys.stderr.isatty():
        yield plain_line
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with progress, logs_above_the_bar():
        yield Bar(progress)

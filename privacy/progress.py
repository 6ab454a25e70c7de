"""How erase_user and export_user show a run going: a rich bar on a terminal (items done, out of
the total when one is known), a plain line per step otherwise (a pipe, a log, `kubectl exec`
without -t)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from supworker.terminal import logs_above_the_bar

# Items done so far, what is being worked on, and the total they go to (None: not known).
Update = Callable[[int, str, int | None], None]


@contextmanager
def bar(title: str) -> Iterator[Update]:
    if not sys.stderr.isatty():

        def line(done: int, what: str, total: int | None) -> None:
            sys.stderr.write(f"{title}: {what}: {done:,}" + (f" of {total:,}\n" if total is not None else "\n"))

        yield line
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[what]}"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True)) as progress, logs_above_the_bar():
        task = progress.add_task(title, total=None, what="")
        yield lambda done, what, total: progress.update(task, completed=done, what=what, total=total)

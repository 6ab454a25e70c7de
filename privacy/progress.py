"""How erase_user and export_user show a run going: a rich bar on a terminal (rows done out of
the dry run's count), a plain line per step otherwise (a pipe, a log, `kubectl exec` without -t)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Update = Callable[[int, str], None]  # items done so far, and what is being worked on


@contextmanager
def bar(title: str, total: int | None) -> Iterator[Update]:
    if not sys.stderr.isatty():

        def line(done: int, what: str) -> None:
            sys.stderr.write(f"{title}: {what}: {done:,}" + (f" of {total:,}\n" if total is not None else "\n"))

        yield line
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[what]}"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(title, total=total, what="")
        yield lambda done, what: progress.update(task, completed=done, what=what)

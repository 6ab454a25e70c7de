"""A progress bar's neighbours on a terminal: what the commands that draw one (manage.py cleanup,
erase_user, export_user) share."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def logs_above_the_bar() -> Iterator[None]:
    """While rich draws the bar, console log lines go through its stand-in for stderr, which prints
    them above the bar instead of into it. Log files are left alone."""
    proxy = sys.stderr
    terminal = getattr(proxy, "rich_proxied_file", None)
    loggers = [logging.root, *(x for x in logging.root.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    handlers = [
        h for lg in loggers for h in lg.handlers if type(h) is logging.StreamHandler and h.stream is terminal
    ]  # fmt: skip
    for handler in handlers:
        handler.setStream(proxy)
    try:
        yield
    finally:
        for handler in handlers:
            handler.setStream(terminal)

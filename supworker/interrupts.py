"""Ctrl-C in a command that writes to PostgreSQL.

Python raises KeyboardInterrupt at whatever line runs when SIGINT arrives, and Django's
transaction bookkeeping (transaction.atomic entering and leaving, set_autocommit) is not safe
against that. Cut short there, the connection stays inside a transaction nothing will commit (or
psycopg2 refuses to leave it: "set_session cannot be used inside a transaction"), and every later
write of the process, the record of the interrupted run included, is rolled back when it exits.

So a transaction runs with SIGINT held until it has ended (`interrupts_deferred`), and code that
must write after an interrupt first makes sure the connection is not stuck in a transaction
(`reconnect_if_left_in_a_transaction`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from django.db import connection

log = logging.getLogger(__name__)


class Deferral:
    """SIGINT held while a block runs: noted, and delivered again when the block ends."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous  # the handler the block found (a function, SIG_DFL or SIG_IGN)
        self.noted = False

    def note(self, signum: int, frame: FrameType | None) -> None:
        self.noted = True

    @contextmanager
    def delivered(self) -> Iterator[None]:
        """Within the deferred block, a part where SIGINT does what it did before (KeyboardInterrupt,
        under Python's default handler); one held before this part is delivered as it starts."""
        if self.previous is None:  # nothing deferred (see interrupts_deferred)
            yield
            return
        signal.signal(signal.SIGINT, self.previous)
        try:
            if self.noted:
                self.noted = False
                signal.raise_signal(signal.SIGINT)
            yield
        finally:
            signal.signal(signal.SIGINT, self.note)


@contextmanager
def interrupts_deferred() -> Iterator[Deferral]:
    """Hold SIGINT until the block ends, then deliver it to the handler found (repeats count once).

    Only the main thread can set a signal handler, and only it gets KeyboardInterrupt: elsewhere,
    and under a handler set outside Python, nothing changes."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield Deferral(None)
        return
    deferral = Deferral(previous)
    signal.signal(signal.SIGINT, deferral.note)
    try:
        yield deferral
    finally:
        signal.signal(signal.SIGINT, previous)
        if deferral.noted:
            signal.raise_signal(signal.SIGINT)


def reconnect_if_left_in_a_transaction() -> bool:
    """Replace the connection if it was left inside a transaction no atomic block will end (or set
    to open one), as an interrupt in Django's bookkeeping leaves it; what it had not committed is
    rolled back. Only for a caller that holds no transaction of its own. Returns whether it did."""
    raw = connection.connection
    if raw is None or (not connection.in_atomic_block and connection.get_autocommit() and raw.autocommit):
        return False
    log.warning("the database connection was left inside a transaction (interrupted?): opening a new one")
    try:
        connection.close()
    except Exception:
        log.debug("closing the stuck connection failed", exc_info=True)
    connection.connect()  # resets Django's transaction state (atomic blocks, autocommit) too
    return True

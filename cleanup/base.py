"""What every cleanup shares: options, a lock per cleanup, time-boxed batches, a summary.

A cleanup subclasses `Cleanup` and implements `work(run)`, calling `run.batch(...)` for each
bounded step. The base class holds a lease on the cleanup for the whole run (a row in
cleanup_leases: a second run of the same cleanup finds it held and does nothing) and stops
starting new batches when the time budget is spent, reporting that work remains so the caller
can continue in a fresh job.

The lease is a row with an expiry, not a session-level advisory lock, because a run spans many
transactions and behind PgBouncer in transaction mode each may use another server session. It is
taken and released with one short statement each and renewed inside every batch's transaction;
a worker killed mid-run leaves a lease that runs out after CLEANUP_LEASE_S.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, ClassVar

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from supworker.handlers import PermanentError
from supworker.interrupts import interrupts_deferred

log = logging.getLogger(__name__)
_DURATION_RE = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '24h', '30d', '2w' → timedelta."""
    match = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 24h, 30d or 15m")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    batch_size: int | None = None
    older_than: timedelta | None = None
    time_budget_s: float | None = None

    @classmethod
    def from_payload(cls, data: dict[str, Any] | None) -> Options:
        """Options from a cleanup job's `data`: {dryRun, batchSize, olderThan}; bad ones are permanent errors."""
        data = data or {}
        try:
            batch_size = data.get("batchSize")
            if batch_size is not None and (not isinstance(batch_size, int) or not 1 <= batch_size <= 100_000):
                raise ValueError("batchSize must be a whole number from 1 to 100000")
            older_than = parse_duration(data["olderThan"]) if data.get("olderThan") is not None else None
        except (ValueError, TypeError) as exc:
            raise PermanentError(f"invalid cleanup options: {exc}") from None
        return cls(dry_run=bool(data.get("dryRun", False)), batch_size=batch_size, older_than=older_than)


@dataclass
class Run:
    """One execution of a cleanup: its options, counters and the clock."""

    name: str
    options: Options
    batch_size: int
    deadline: float
    progress: Callable[[Run], None] | None = None
    # For the progress callback: what its bar counts (the sum of these counts, or batches when
    # none), and what that should reach by the end (None: unknown).
    progress_counts: tuple[str, ...] = ()
    total: int | None = None
    counts: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    slowest_batch_s: float = 0.0
    more: bool = False  # stopped by the time budget with work left
    details: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping in the record
    lease: Lease | None = None  # renewed in every batch

    @property
    def dry_run(self) -> bool:
        return self.options.dry_run

    @property
    def done(self) -> int:
        """How far the run is, in the unit `total` counts."""
        return sum(self.counts[key] for key in self.progress_counts) if self.progress_counts else self.batches

    def report(self) -> None:
        """Tell the progress callback, if there is one, how far the run is."""
        if self.progress:
            self.progress(self)

    def out_of_time(self) -> bool:
        # At least one batch per run: a follow-up job must always make progress, or a
        # too-small budget would hand work on forever.
        return self.batches > 0 and time.monotonic() >= self.deadline

    def walk(self, step: Callable[[tuple | None], tuple[dict[str, int], tuple | None]], key: str) -> None:
        """`repeat` for a keyset step: each call gets the last key of the previous batch."""
        after = None

        def one() -> dict[str, int]:
            nonlocal after
            counts, last = step(after)
            after = last or after
            return counts

        self.repeat(one, key)

    def delete_all(self, table: str, where: str, params: list[Any], order: str, key: str) -> None:
        """Delete every row matching `where`, a batch at a time.

        As PostgreSQL's planner would: when much of the table matches, walk the heap in
        physical order, a range of pages per batch (sequential reads); when little does, walk
        the (col, id) index, each batch after the last key (no rescans of dead entries).
        """
        share, rows_per_page = matching_share(table, where, params)
        if share >= DENSE_SHARE:
            self._delete_by_pages(table, where, params, key, share * rows_per_page)
            return

        def step(after: tuple | None) -> tuple[dict[str, int], tuple | None]:
            deleted, last = delete_batch(table, where, params, self.batch_size, order, after)
            return {key: deleted}, last

        self.walk(step, key)

    @staticmethod
    def _delete_page_range(table: str, where: str, params: list[Any], key: str, first: int, end: int) -> dict[str, int]:
        return {key: delete_page_range(table, where, params, first, end)}

    def _delete_by_pages(self, table: str, where: str, params: list[Any], key: str, matches_per_page: float) -> None:
        pages_per_batch = max(1, int(self.batch_size / max(matches_per_page, 1.0)))
        last_page = table_pages(table)
        for first in range(0, last_page + 1, pages_per_batch):
            self.batch(partial(self._delete_page_range, table, where, params, key, first, first + pages_per_batch))
            if first + pages_per_batch <= last_page and self.out_of_time():
                self.more = True
                return

    def repeat(self, step: Callable[[], dict[str, int]], key: str) -> None:
        """Batches of `step` until one comes back short (done) or the budget is spent after a
        full one (work remains: `more`)."""
        while not self.more:
            if self.batch(step)[key] < self.batch_size:
                return
            if self.out_of_time():
                self.more = True

    def batch(self, step: Callable[[], dict[str, int]]) -> dict[str, int]:
        """Run one bounded step in its own transaction; returns (and adds up) its counts."""
        started = time.monotonic()
        # Ctrl-C waits for the batch's commit or rollback: an interrupt inside Django's transaction
        # bookkeeping would leave the connection in a transaction that nothing ends (and the run's
        # lease and record, written on it next, would be rolled back at exit).
        with interrupts_deferred(), transaction.atomic():
            # A batch lost in a crash is simply done again by the next run, so its commit need
            # not wait for the WAL flush (still crash-safe: the database stays consistent).
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO off")
            if self.lease:
                self.lease.renew()  # in the batch's transaction: a lease lost undoes the batch
            counts = step()
        self.batches += 1
        self.slowest_batch_s = max(self.slowest_batch_s, time.monotonic() - started)
        self.counts.update(counts)
        self.report()
        return counts


class Cleanup:
    name: ClassVar[str]
    # The counts a progress bar adds up (see Run.done); `expected` says what they should reach.
    progress_counts: ClassVar[tuple[str, ...]] = ()

    def work(self, run: Run) -> None:
        raise NotImplementedError

    def expected(self, run: Run) -> int | None:
        """What `progress_counts` should reach by the end of a real run, counted as the dry run
        counts (one query, before the first batch); None when it cannot be known beforehand."""
        return None

    def cutoff(self, run: Run) -> datetime:
        return timezone.now() - self.older_than(run)

    @property
    def default_older_than(self) -> timedelta | None:
        """The age limit when a run names none; None for a cleanup that does not go by age."""
        return None

    def older_than(self, run: Run) -> timedelta:
        if run.options.older_than is not None:
            return run.options.older_than  # 0 included: "--older-than 0s" means everything up to now
        return self.default_older_than or timedelta(0)

    def __call__(self, options: Options, progress: Callable[[Run], None] | None = None) -> dict[str, Any]:
        config = settings.CONFIG.cleanup
        budget = options.time_budget_s if options.time_budget_s is not None else config.time_budget_s
        run = Run(
            name=self.name,
            options=options,
            batch_size=options.batch_size or config.batch_size,
            deadline=time.monotonic() + budget,
            progress=progress,
        )
        started = time.monotonic()
        with cleanup_lease(self.name, config.lease_s) as run.lease:
            if run.lease is None:
                log.warning("cleanup %s is already running elsewhere; this run does nothing", self.name)
                return {"cleanup": self.name, "skipped": "another run holds the lock"}
            if progress and not run.dry_run:  # a dry run only counts: nothing to follow
                run.progress_counts, run.total = self.progress_counts, self.expected(run)
                run.report()
            try:
                self.work(run)
            except LeaseLost as lost:
                log.warning("cleanup %s stops: %s", self.name, lost)
                run.details["stopped"] = str(lost)
        summary = {
            "cleanup": self.name,
            "dry_run": run.dry_run,
            "counts": dict(run.counts),
            "batches": run.batches,
            "slowest_batch_s": round(run.slowest_batch_s, 3),
            "duration_s": round(time.monotonic() - started, 3),
            "more": run.more,
        } | ({"details": run.details} if run.details else {})
        log.info("cleanup %s: %s", self.name, summary)
        return summary


class LeaseLost(RuntimeError):
    """The run's lease ran out (a batch, or the pause before it, outlasted CLEANUP_LEASE_S) and
    another run took it: this run must stop so the two do not work side by side."""


@dataclass(frozen=True)
class Lease:
    """A held lease on a cleanup: its row in cleanup_leases names this run as the holder."""

    name: str
    holder: str
    seconds: int

    def renew(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE cleanup_leases SET expires_at = now() + make_interval(secs => %s)"
                " WHERE name = %s AND holder = %s",
                [self.seconds, self.name, self.holder],
            )
            if cursor.rowcount == 0:
                raise LeaseLost(f"the lease on {self.name} ran out and another run took it")

    def release(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM cleanup_leases WHERE name = %s AND holder = %s", [self.name, self.holder])


def take_lease(name: str, seconds: int) -> Lease | None:
    """The lease on `name` for `seconds`, unless another holder's lease has not run out yet.

    One statement: it inserts the row, or takes over an expired one; a lease still running is
    left alone and nothing is returned. Two runs racing for it serialise on the row.
    """
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO cleanup_leases AS lease (name, holder, expires_at)
               VALUES (%s, %s, now() + make_interval(secs => %s))
               ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
               WHERE lease.expires_at < now()
               RETURNING 1""",
            [name, holder, seconds],
        )
        taken = cursor.fetchone() is not None
    return Lease(name, holder, seconds) if taken else None


@contextmanager
def cleanup_lease(name: str, seconds: int) -> Iterator[Lease | None]:
    """The lease on a cleanup for the length of the block (None: another run holds it)."""
    lease = take_lease(name, seconds)
    try:
        yield lease
    finally:
        if lease:
            lease.release()


DENSE_SHARE = 0.1  # above this share of matching rows, a sequential walk beats the index


def matching_share(table: str, where: str, params: list[Any]) -> tuple[float, float]:
    """The planner's estimate of the share of rows matching `where`, and rows per page."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table} WHERE {where}", params)  # noqa: S608
        estimate = cursor.fetchone()[0][0]["Plan"]["Plan Rows"]
        cursor.execute("SELECT reltuples, relpages FROM pg_class WHERE oid = %s::regclass", [table])
        tuples, pages = cursor.fetchone()
    if tuples <= 0 or pages <= 0:
        return 0.0, 0.0  # never analysed: use the index
    return min(estimate / tuples, 1.0), tuples / pages


def table_pages(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int", [table])
        return cursor.fetchone()[0]


def delete_page_range(table: str, where: str, params: list[Any], first: int, end: int) -> int:
    """Delete the matching rows stored in pages [first, end): a TID range scan (PostgreSQL 14+)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE ctid >= %s::tid AND ctid < %s::tid AND {where}",  # noqa: S608 - constants
            [f"({first},0)", f"({end},0)", *params],
        )
        return cursor.rowcount


def after_clause(order: str, after: tuple | None) -> tuple[str, list[Any]]:
    """`AND (col, id) > (…)`: where the previous batch stopped. Each batch starts there instead of
    walking again over the dead index entries the earlier batches left (keyset pagination)."""
    if after is None:
        return "", []
    return f" AND ({order}) > ({', '.join(['%s'] * len(after))})", list(after)


def delete_batch(
    table: str, where: str, params: list[Any], limit: int, order: str, after: tuple | None = None
) -> tuple[int, tuple | None]:
    """Delete up to `limit` rows matching `where` in `order` ("col, id"), after the key `after`.
    Returns how many, and the last key of the batch.

    Rows are found through the (col, id) index and deleted by their physical address (ctid, a
    TID scan) instead of a primary-key probe each. No row locks: the lease keeps
    cleanups apart, and the DELETE checks `where` again, so a row the messenger changed
    meanwhile (a session active again) is left alone.
    """
    resume, resume_params = after_clause(order, after)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH batch AS MATERIALIZED (
                    SELECT ctid AS row_address, {order} FROM {table} WHERE {where}{resume}
                    ORDER BY {order} LIMIT %s),
                gone AS (
                    DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT row_address FROM batch)) AND {where}
                    RETURNING 1)
                SELECT (SELECT count(*) FROM gone), last.* FROM (
                    SELECT {order} FROM batch ORDER BY {order} DESC LIMIT 1) AS last""",  # noqa: S608 - constants
            [*params, *resume_params, limit, *params],
        )
        row = cursor.fetchone()
    return (row[0], tuple(row[1:])) if row else (0, None)


def count(table: str, where: str, params: list[Any]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE {where}", params)  # noqa: S608 - our constants
        return cursor.fetchone()[0]

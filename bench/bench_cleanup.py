"""Delete 1,000,000 expired sessions: the batched cleanup against one raw `DELETE … WHERE`
(the floor) and Django's `QuerySet.delete()`, each on the same fresh data, in a database of
the benchmark's own. Targets: at most 1.5 x the raw statement, every batch under 1 s, peak
memory of the process under 200 MB."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil
from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from bench.table import Table

EXPIRED = 1_000_000
LIVE = 200_000  # sessions that must survive every method
BENCH_DB = "supworker_bench"
FILL = """
INSERT INTO user_sessions (id, user_id, device_id, last_active_at, is_active, created_at)
SELECT gen_random_uuid(), gen_random_uuid(), 'device-' || n, now() - %s * interval '1 day', true,
       now() - interval '90 days'
FROM generate_series(1, %s) AS n
"""


class PeakMemory:
    """Samples this process's resident memory every 10 ms while running."""

    def __enter__(self) -> PeakMemory:
        self.process, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.01)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _use_bench_database() -> dict:
    """Point the default connection at a database of the benchmark's own, created and migrated once."""
    settings_dict = connections["default"].settings_dict
    original = dict(settings_dict)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB])
        exists = cursor.fetchone()
        if not exists:
            cursor.execute(f'CREATE DATABASE "{BENCH_DB}"')
    connection.close()
    settings_dict["NAME"] = BENCH_DB
    call_command("migrate", verbosity=0)
    return original


def _fresh_data() -> None:
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE user_sessions")
        cursor.execute(FILL, [40, EXPIRED])
        cursor.execute(FILL, [1, LIVE])
        cursor.execute("VACUUM (ANALYZE) user_sessions")


def _measure(action: Callable[[], object]) -> tuple[float, int, object]:
    _fresh_data()
    with PeakMemory() as memory:
        started = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM user_sessions")
        left = cursor.fetchone()[0]
    if left != LIVE:
        raise RuntimeError(f"{left} sessions left instead of the {LIVE} live ones")
    return seconds, memory.peak, result


def run() -> Table:
    from cleanup.base import Options
    from cleanup.registry import CLEANUPS
    from supworker.models import UserSession

    original = _use_bench_database()
    try:
        cutoff = timezone.now() - timezone.timedelta(days=30)

        def raw() -> None:
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM user_sessions WHERE last_active_at < %s", [cutoff])

        def queryset() -> None:
            UserSession.objects.filter(last_active_at__lt=cutoff).delete()

        def batched() -> dict:
            return CLEANUPS["sessions"](Options(time_budget_s=3600))

        results = {
            name: _measure(action) for name, action in [("raw", raw), ("queryset", queryset), ("batched", batched)]
        }
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE user_sessions")
    finally:
        connection.close()
        connections["default"].settings_dict.update(original)

    floor = results["raw"][0]
    summary = results["batched"][2]
    table = Table(
        f"Cleanup: delete {EXPIRED:,} expired sessions ({LIVE:,} live ones stay)",
        ["method", "seconds", "x raw DELETE", "batches", "slowest batch s", "peak RSS MB"],
    )
    mb = 2**20
    for label, name, batches, slowest_batch in [
        ("one raw DELETE … WHERE (floor)", "raw", 1, "-"),
        ("QuerySet.delete()", "queryset", 1, "-"),
        ("supworker batched cleanup", "batched", summary["batches"], f"{summary['slowest_batch_s']:.3f}"),
    ]:
        seconds, peak_rss, _ = results[name]
        table.rows.append([label, seconds, f"{seconds / floor:.2f}", batches, slowest_batch, peak_rss / mb])
    ratio, slowest, peak = results["batched"][0] / floor, summary["slowest_batch_s"], results["batched"][1] / 2**20
    table.notes.append(
        f"targets: ≤ 1.5 x raw: {'met' if ratio <= 1.5 else 'NOT met'} ({ratio:.2f}); "
        f"every batch < 1 s: {'met' if slowest < 1 else 'NOT met'} ({slowest:.3f} s); "
        f"peak memory < 200 MB: {'met' if peak < 200 else 'NOT met'} ({peak:.0f} MB)"
    )
    table.notes.append(
        f"batch size {settings.CONFIG.cleanup.batch_size:,} (CLEANUP_BATCH_SIZE), each batch its own transaction; "
        "peak RSS is this process's (the deleting happens in PostgreSQL)"
    )
    return table

"""VACUUM (ANALYZE) of the service's tables, with their sizes before and after.

VACUUM cannot run inside a transaction, so this cleanup runs in autocommit, table by table.
"""

from __future__ import annotations

from django.db import connection

from cleanup.base import Cleanup, Run

TABLES = (
    "messages", "stories", "user_sessions", "user_prekeys", "notifications", "temporary_files",
    "fcm_devices", "job_runs", "dead_letters", "websocket_connections", "user_statistics",
    "global_statistics", "health_check_results",
)  # fmt: skip


def table_bytes(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s::regclass)", [table])
        return cursor.fetchone()[0]


class Maintenance(Cleanup):
    name = "maintenance"
    progress_counts = ("tables_vacuumed",)

    def expected(self, run: Run) -> int:
        return len(TABLES)

    def work(self, run: Run) -> None:
        sizes = {}
        for table in TABLES:
            before = table_bytes(table)
            if not run.dry_run:
                with connection.cursor() as cursor:
                    cursor.execute(f'VACUUM (ANALYZE) "{table}"')
                run.counts["tables_vacuumed"] += 1
                run.report()  # VACUUM runs outside run.batch (no transaction), so report here
            sizes[table] = {"before": before, "after": table_bytes(table)}
        run.counts["bytes_before"] = sum(s["before"] for s in sizes.values())
        run.counts["bytes_after"] = sum(s["after"] for s in sizes.values())
        run.details["table_bytes"] = sizes

"""Websocket connections silent for WEBSOCKET_STALE_MINUTES (15) are removed, and a session left
with no live connection is marked inactive."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection

from cleanup.base import Cleanup, Run, after_clause, count

STALE = "last_heartbeat_at < %s"


class Websockets(Cleanup):
    name = "websockets"
    progress_counts = ("connections_removed",)

    @property
    def default_older_than(self) -> timedelta:
        return timedelta(minutes=settings.CONFIG.cleanup.websocket_stale_minutes)

    def work(self, run: Run) -> None:
        if run.dry_run:
            run.counts["connections_to_remove"] = self.expected(run)
            return
        cutoff = self.cutoff(run)
        run.walk(lambda after: self._remove(cutoff, run.batch_size, after), "connections_removed")

    def expected(self, run: Run) -> int:
        return count("websocket_connections", STALE, [self.cutoff(run)])

    def _remove(self, cutoff: datetime, limit: int, after: tuple | None) -> tuple[dict[str, int], tuple | None]:
        resume, resume_params = after_clause("last_heartbeat_at, id", after)
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM websocket_connections WHERE id IN (SELECT id FROM websocket_connections "  # noqa: S608
                f"WHERE {STALE}{resume} ORDER BY last_heartbeat_at, id LIMIT %s FOR UPDATE SKIP LOCKED) "
                "RETURNING session_id, last_heartbeat_at, id",
                [cutoff, *resume_params, limit],
            )
            rows = cursor.fetchall()
            sessions = list({session for session, _, _ in rows if session})
            last = max((heartbeat, row_id) for _, heartbeat, row_id in rows) if rows else None
            cursor.execute(
                "UPDATE user_sessions s SET is_active = false WHERE s.id = ANY(%s) AND s.is_active "
                "AND NOT EXISTS (SELECT 1 FROM websocket_connections w WHERE w.session_id = s.id)",
                [sessions],
            )
            return {"connections_removed": len(rows), "sessions_marked_inactive": cursor.rowcount}, last

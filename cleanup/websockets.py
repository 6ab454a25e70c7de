"""Websocket connections silent for WEBSOCKET_STALE_MINUTES (15) are removed, and a session left
with no live connection is marked inactive."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from cleanup.base import Cleanup, Run, count

STALE = "last_heartbeat_at < %s"


class Websockets(Cleanup):
    name = "websockets"

    @property
    def default_older_than(self) -> timedelta:
        return timedelta(minutes=settings.CONFIG.cleanup.websocket_stale_minutes)

    def work(self, run: Run) -> None:
        cutoff = timezone.now() - self.older_than(run)
        if run.dry_run:
            run.counts["connections_to_remove"] = count("websocket_connections", STALE, [cutoff])
            return
        run.repeat(lambda: self._remove(cutoff, run.batch_size), "connections_removed")

    def _remove(self, cutoff, limit: int) -> dict[str, int]:
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM websocket_connections WHERE id IN (SELECT id FROM websocket_connections "  # noqa: S608
                f"WHERE {STALE} LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING session_id",
                [cutoff, limit],
            )
            rows = cursor.fetchall()
            sessions = list({session for (session,) in rows if session})
            cursor.execute(
                "UPDATE user_sessions s SET is_active = false WHERE s.id = ANY(%s) AND s.is_active "
                "AND NOT EXISTS (SELECT 1 FROM websocket_connections w WHERE w.session_id = s.id)",
                [sessions],
            )
            return {"connections_removed": len(rows), "sessions_marked_inactive": cursor.rowcount}

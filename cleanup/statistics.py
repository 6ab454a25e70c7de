"""Per-user and global counts (messages, stories, active sessions, last activity), aggregated by
SQL into user_statistics and global_statistics. One transaction: readers see all or nothing."""

from __future__ import annotations

from django.db import connection

from cleanup.base import Cleanup, Run

USERS_SQL = """
WITH sent AS (
    SELECT sender_id AS user_id, count(*) AS messages, max(created_at) AS last_at
    FROM messages WHERE deleted_at IS NULL GROUP BY sender_id
), posted AS (
    SELECT user_id, count(*) AS stories, max(created_at) AS last_at
    FROM stories WHERE deleted_at IS NULL GROUP BY user_id
), sessions AS (
    SELECT user_id, count(*) FILTER (WHERE is_active) AS active, max(last_active_at) AS last_at
    FROM user_sessions GROUP BY user_id
), users AS (
    SELECT user_id FROM sent UNION SELECT user_id FROM posted UNION SELECT user_id FROM sessions
)
INSERT INTO user_statistics (user_id, messages_sent, stories, active_sessions, last_activity_at, updated_at)
SELECT u.user_id, COALESCE(sent.messages, 0), COALESCE(posted.stories, 0), COALESCE(sessions.active, 0),
       GREATEST(sent.last_at, posted.last_at, sessions.last_at), now()
FROM users u
LEFT JOIN sent USING (user_id) LEFT JOIN posted USING (user_id) LEFT JOIN sessions USING (user_id)
ON CONFLICT (user_id) DO UPDATE SET
    messages_sent = EXCLUDED.messages_sent, stories = EXCLUDED.stories,
    active_sessions = EXCLUDED.active_sessions, last_activity_at = EXCLUDED.last_activity_at,
    updated_at = EXCLUDED.updated_at
"""

GLOBAL_SQL = """
INSERT INTO global_statistics (computed_at, users, messages, messages_last_24h, stories, active_sessions)
SELECT now(),
       (SELECT count(*) FROM user_statistics),
       (SELECT count(*) FROM messages WHERE deleted_at IS NULL),
       (SELECT count(*) FROM messages WHERE created_at > now() - interval '24 hours'),
       (SELECT count(*) FROM stories WHERE deleted_at IS NULL),
       (SELECT count(*) FROM user_sessions WHERE is_active)
RETURNING users, messages, messages_last_24h, stories, active_sessions
"""


class Statistics(Cleanup):
    name = "statistics"

    def expected(self, run: Run) -> int:
        return 1  # one batch: the progress bar counts batches

    def work(self, run: Run) -> None:
        if run.dry_run:
            return
        run.batch(self._aggregate)

    def _aggregate(self) -> dict[str, int]:
        with connection.cursor() as cursor:
            cursor.execute(USERS_SQL)
            users = cursor.rowcount
            cursor.execute(GLOBAL_SQL)
            totals = dict(
                zip(
                    ("users", "messages", "messages_last_24h", "stories", "active_sessions"),
                    cursor.fetchone(),
                    strict=True,
                )
            )
        return {"users_updated": users} | {f"total_{k}": v for k, v in totals.items()}

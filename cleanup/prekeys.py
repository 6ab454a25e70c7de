"""Used one-time prekeys are removed PREKEY_USED_GRACE_DAYS (7) after use; users whose stock of
unused prekeys is below PREKEY_LOW_THRESHOLD get a silent push asking their devices to upload
more. The server holds only public prekeys and can never make new ones itself.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.db import connection
from django.utils import timezone

from cleanup.base import Cleanup, Run, count
from supworker import jobtypes
from supworker.enqueue import Submission, enqueue, redis_connection
from supworker.envelope import Envelope

USED = "used_at < %s"
# Users whose unused stock is low, including those with none left: anyone holding prekeys (used
# ones stay until their grace ends) or an active session. Which of them have a device to wake is
# the push handler's business (it looks up each user's active devices), not this app's.
LOW_STOCK_SQL = """
    SELECT user_id, sum(unused)::int FROM (
        SELECT user_id, count(*) FILTER (WHERE used_at IS NULL) AS unused FROM user_prekeys GROUP BY user_id
        UNION ALL
        SELECT DISTINCT user_id, 0 FROM user_sessions WHERE is_active IS NOT false
    ) stock
    GROUP BY user_id HAVING sum(unused) < %s
    ORDER BY 2, 1
"""
REFILL_KIND = "prekeys_low"
MULTICAST_USERS = 1000  # the most userIds a notification.push job takes (notifications/jobtypes.py)


def refill_requests(low: list[tuple[UUID, int]], day: str) -> list[Envelope]:
    """Data-only pushes (empty title and body): the app uploads fresh prekeys without showing anything.

    One multicast job per unused count and thousand users: the same stock on the same day gives
    the same job ids, so a second run that day asks no one again.
    """
    by_unused: dict[int, list[str]] = defaultdict(list)
    for user_id, unused in low:
        by_unused[unused].append(str(user_id))
    requests = []
    for unused, users in by_unused.items():
        for start in range(0, len(users), MULTICAST_USERS):
            chunk = users[start : start + MULTICAST_USERS]
            payload = {"type": "push", "userId": chunk[0], "userIds": chunk, "title": "", "body": ""}
            requests.append(
                Envelope.sealed(
                    job_id=f"prekeys-low:{day}:{unused}:{start // MULTICAST_USERS + 1}",
                    job_type="notification.push",
                    payload=payload | {"data": {"kind": REFILL_KIND, "unused": str(unused)}},
                )
            )
    return requests


class Prekeys(Cleanup):
    name = "prekeys"
    progress_counts = ("prekeys_removed",)

    @property
    def default_older_than(self) -> timedelta:
        return timedelta(days=settings.CONFIG.cleanup.prekey_used_grace_days)

    def work(self, run: Run) -> None:
        low = self._low_stock(settings.CONFIG.cleanup.prekey_low_threshold)
        if run.dry_run:
            run.counts["used_prekeys_to_remove"] = self.expected(run)
            run.counts["users_low_on_prekeys"] = len(low)
            return
        run.delete_all("user_prekeys", USED, [self.cutoff(run)], "used_at, id", "prekeys_removed")
        requests = refill_requests(low, timezone.now().strftime("%Y-%m-%d"))
        queue = jobtypes.job_type("notification.push").queue_for(None)
        result = enqueue(
            redis_connection(),
            [Submission(e, f"id:{e.job_id}", 2 * 86400) for e in requests],
            {e.job_id: queue for e in requests},
        )
        # Users asked, not jobs: each of their active devices gets the push.
        run.counts["refill_pushes_enqueued"] += sum(len(e.payload["userIds"]) for e in result.enqueued)

    def expected(self, run: Run) -> int:
        return count("user_prekeys", USED, [self.cutoff(run)])

    def _low_stock(self, threshold: int) -> list[tuple[UUID, int]]:
        with connection.cursor() as cursor:
            cursor.execute(LOW_STOCK_SQL, [threshold])
            return cursor.fetchall()

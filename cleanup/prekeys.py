"""Used one-time prekeys are removed PREKEY_USED_GRACE_DAYS (7) after use; users whose stock of
unused prekeys is below PREKEY_LOW_THRESHOLD get a silent push asking their devices to upload
more. The server holds only public prekeys and can never make new ones itself.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from cleanup.base import Cleanup, Run, count
from supworker import jobtypes
from supworker.enqueue import Submission, enqueue, redis_connection
from supworker.envelope import Envelope

USED = "used_at < %s"
# Users with an active push device whose unused stock is low, including those with none left.
LOW_STOCK_SQL = """
    SELECT d.user_id, COALESCE(k.unused, 0)
    FROM (SELECT DISTINCT user_id FROM fcm_devices WHERE active AND user_id IS NOT NULL) d
    LEFT JOIN (SELECT user_id, count(*) AS unused FROM user_prekeys WHERE used_at IS NULL GROUP BY user_id) k
        USING (user_id)
    WHERE COALESCE(k.unused, 0) < %s
"""
REFILL_KIND = "prekeys_low"


def refill_request(user_id, unused: int, day: str) -> Envelope:
    """A data-only push (empty title and body): the app uploads fresh prekeys without showing anything."""
    return Envelope.sealed(
        job_id=f"prekeys-low:{user_id}:{day}",  # at most one request per user per day
        job_type="notification.push",
        payload={
            "type": "push",
            "userId": str(user_id),
            "title": "",
            "body": "",
            "data": {"kind": REFILL_KIND, "unused": str(unused)},
        },
    )


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
        day = timezone.now().strftime("%Y-%m-%d")
        requests = [refill_request(user_id, unused, day) for user_id, unused in low]
        queue = jobtypes.job_type("notification.push").queue_for(None)
        for start in range(0, len(requests), 1000):
            chunk = requests[start : start + 1000]
            result = enqueue(
                redis_connection(),
                [Submission(e, f"id:{e.job_id}", 2 * 86400) for e in chunk],
                {e.job_id: queue for e in chunk},
            )
            run.counts["refill_pushes_enqueued"] += len(result.enqueued)

    def expected(self, run: Run) -> int:
        return count("user_prekeys", USED, [self.cutoff(run)])

    def _low_stock(self, threshold: int) -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute(LOW_STOCK_SQL, [threshold])
            return cursor.fetchall()

"""The LMS OTP worker's statistics, kept for OTP e-mails (job type `otp.email`) in one Redis hash.

The names and meanings are the LMS worker's:

- `processedJobs`: OTP e-mails delivered (the SMTP server or e-mail provider accepted them),
  and those not sent because their address is suppressed (notifications/suppression.py): both
  are jobs done; the suppressed ones are counted apart in `supworker_emails_suppressed_total`;
- `failedJobs`: OTP e-mails that failed for good: a permanent error at once, or a transient
  one after the last of `MAX_RETRIES` retries;
- `retriedJobs`: retries made (each time a failed OTP e-mail is put back to be tried again);
- `startTime`: when these counters started (the first OTP e-mail settled since Redis was empty);
- `lastProcessedAt`: when an OTP e-mail was last delivered (a suppressed one does not move it);
- `lastError`: the last delivery error, address masked, code never in it (notifications/email.py).

The three counters are the runner's own outcome counts for `otp.email` (supworker.stats, the
same numbers as `supworker_jobs_total{type="otp.email"}`), under the LMS worker's names; this
module keeps what those counts lack: the start, the last delivery and the last error, written
once the runner has recorded each item's outcome (`on_settled`, registered in
notifications/jobs.py). Every notification worker writes the same keys, so the numbers are the
whole service's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis

from supworker.handlers import Settled
from supworker.stats import JOB_STATS_KEY

STATS_KEY = "supworker:stats:otp.email"
JOB_TYPE = "otp.email"


@dataclass(frozen=True)
class OtpStats:
    """The LMS worker's names, as its operators know them; times are Unix times."""

    processedJobs: int = 0
    failedJobs: int = 0
    retriedJobs: int = 0
    startTime: float | None = None
    lastProcessedAt: float | None = None
    lastError: dict[str, Any] | None = None  # name, message, jobId, at


def record(connection: Redis, settled: list[Settled]) -> None:
    """Note when a batch's OTP e-mails settled: the start, the last delivery, the last error."""
    if not settled:
        return
    now = time.time()
    # A suppressed address's OTP job succeeds too (nothing to retry) but was not delivered.
    delivered = any(item.outcome.ok and "suppressed" not in (item.outcome.result or {}) for item in settled)
    errors = [item for item in settled if not item.outcome.ok]
    with connection.pipeline(transaction=False) as pipe:
        pipe.hsetnx(STATS_KEY, "startTime", repr(now))
        if delivered:
            pipe.hset(STATS_KEY, "lastProcessedAt", repr(now))
        if errors:
            pipe.hset(STATS_KEY, "lastError", json.dumps(_error(errors[-1], now)))
        pipe.execute()


def read(connection: Redis) -> OtpStats:
    raw = {key.decode(): value.decode() for key, value in connection.hgetall(STATS_KEY).items()}
    delivered, failed, retried = (
        int(value or 0)
        for value in connection.hmget(JOB_STATS_KEY, *(f"{JOB_TYPE}:{o}" for o in ("succeeded", "failed", "retried")))
    )
    return OtpStats(
        processedJobs=delivered,
        failedJobs=failed,
        retriedJobs=retried,
        startTime=float(raw["startTime"]) if "startTime" in raw else None,
        lastProcessedAt=float(raw["lastProcessedAt"]) if "lastProcessedAt" in raw else None,
        lastError=json.loads(raw["lastError"]) if "lastError" in raw else None,
    )


def _error(item: Settled, now: float) -> dict[str, Any]:
    # Outcome.error is "<exception class>: <message>", masked already (supworker.handlers.Outcome).
    name, _, message = item.outcome.error.partition(": ")
    return {"name": name, "message": message, "jobId": item.envelope.job_id, "at": now}

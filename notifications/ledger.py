"""The delivery ledger (the messenger's `notifications` table): claim a row before sending,
record the outcome after.

A row is unique per (job_id, recipient). Claiming inserts it with `success` NULL under
ON CONFLICT DO NOTHING: only the worker whose insert went in may send, so a redelivered or
requeued job never sends twice. A row whose earlier try failed (`success` false) may be
claimed again.

A row left NULL means its sender died between claiming and recording (killed, OOM, machine
lost). The claim keeps the id of the RQ job that made it (`claimed_by`). RQ runs one job id
in one place at a time and runs it again (its `Retry`, an operator's requeue) only once the
earlier execution is over, so when the same RQ job claims again, its own NULL rows are from
a dead execution: they are taken over at once. A NULL row of another RQ job may be in flight
right now: it is looked at again later and taken over only after STALE_CLAIM_SECONDS. (A
worker alive but frozen for longer than RQ's heartbeat margin, 60 s, is taken for dead by RQ,
which runs its job again; its unsettled messages are then sent by both, like everything else
such a job does.)

The guarantee when a worker is killed mid-batch (its work-horse or the whole worker), for a
job RQ runs again (its Retry has tries left, 3 by default; after that it waits in RQ's failed
registry for an operator's requeue), is at least once, with duplicates bounded and marked:
- Every message of the batch is sent; those the dead worker never handed to the provider
  are sent once.
- A message is sent twice only if its request had reached FCM, the SMTP server or the SMS
  provider and its answer was not yet recorded when the worker died: the provider may have
  delivered it, nothing on our side can tell, and a lost OTP or message notification is
  worse than a duplicate. Answers are recorded as they arrive (`record`): each push as FCM
  answers it, together with those that arrived meanwhile; each e-mail and SMS right after
  the server's reply. So that is at most the pushes in flight, and one e-mail or SMS.
- The second copy carries the first one's deduplication key, derived from the job id (and
  the address): for pushes the APNs collapse id and the Android and web notification tag
  (a device still showing the first notification replaces it) and the Web Push Topic;
  for e-mail the Message-ID (mail systems that drop duplicates by Message-ID, as Gmail does,
  show one; others show two identical messages). SMS has no such key: a duplicate SMS shows.
- Outcomes are committed without waiting for the WAL flush (synchronous_commit off, about
  0.3 ms instead of several): a PostgreSQL crash can lose the last fraction of a second of
  outcomes, whose messages are then sent again as above. The job's record, a synchronous
  commit written after them, makes them durable.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from django.db import InterfaceError, OperationalError, connection, transaction
from rq import get_current_job

from notifications.models import Notification
from supworker.masking import mask_text

logger = logging.getLogger(__name__)
# Long enough for a PostgreSQL restart or failover, well within any batch's RQ timeout.
RECORD_PATIENCE_SECONDS = 20.0
# A claim older than this with no outcome belongs to a worker that died: far beyond the 30 s item timeout.
STALE_CLAIM_SECONDS = 300
# A delivery another worker is sending right now is looked at again after this long.
IN_FLIGHT_RETRY_AFTER = 30.0
Key = tuple[str, str]  # (job_id, recipient)


@dataclass(frozen=True)
class Delivery:
    """One message to one recipient, as the log sees it (nothing secret in it)."""

    job_id: str
    user_id: str
    type: str  # push, email or sms
    recipient: str  # masked address or number, or a device reference
    title: str | None = None
    body: str | None = None


def current_claimant() -> str:
    """Who claims: the RQ job running now ("" outside RQ, which never takes over a claim early)."""
    job = get_current_job()
    return job.id if job is not None else ""


def claim(deliveries: list[Delivery], claimant: str | None = None) -> dict[tuple[str, str], uuid.UUID]:
    """Claim rows for deliveries; returns {(job_id, recipient): row id} of those this caller may send."""
    if not deliveries:
        return {}
    claimant = current_claimant() if claimant is None else claimant
    ids = [uuid.uuid4() for _ in deliveries]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO notifications (id, job_id, user_id, type, recipient, title, body, success, error,
                                       provider_message_id, created_at, claimed_by)
            SELECT id, job_id, user_id, type, recipient, title, body, NULL, '', '', now(), %s
            FROM unnest(%s::uuid[], %s::text[], %s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[])
                 AS d(id, job_id, user_id, type, recipient, title, body)
            ON CONFLICT (job_id, recipient) WHERE job_id IS NOT NULL DO NOTHING
            RETURNING id, job_id, recipient
            """,
            [
                claimant,
                ids,
                [d.job_id for d in deliveries],
                [d.user_id for d in deliveries],
                [d.type for d in deliveries],
                [d.recipient for d in deliveries],
                [d.title for d in deliveries],
                [d.body for d in deliveries],
            ],
        )
        claimed = {(job_id, recipient): row_id for row_id, job_id, recipient in cursor.fetchall()}
        others = [d for d in deliveries if (d.job_id, d.recipient) not in claimed]
        if others:
            # Earlier tries that failed, claims of an earlier execution of this very RQ job (it
            # died: RQ does not run a job again while it runs), and claims nobody settled for
            # STALE_CLAIM_SECONDS: take them over atomically.
            cursor.execute(
                """
                UPDATE notifications n SET success = NULL, error = '', created_at = now(), claimed_by = %s
                FROM unnest(%s::text[], %s::text[]) AS d(job_id, recipient)
                WHERE n.job_id = d.job_id AND n.recipient = d.recipient
                  AND (n.success = false
                       OR (n.success IS NULL AND %s <> '' AND n.claimed_by = %s)
                       OR (n.success IS NULL AND n.created_at < now() - make_interval(secs => %s)))
                RETURNING n.id, n.job_id, n.recipient
                """,
                [
                    claimant,
                    [d.job_id for d in others],
                    [d.recipient for d in others],
                    claimant,
                    claimant,
                    STALE_CLAIM_SECONDS,
                ],
            )
            claimed.update({(job_id, recipient): row_id for row_id, job_id, recipient in cursor.fetchall()})
    return claimed


@dataclass(frozen=True)
class Claims:
    """What a batch may do with each delivery: send it (its row is ours), count it as sent by an
    earlier delivery of the job, or leave it to the worker sending it right now."""

    rows: dict[Key, uuid.UUID]
    sent_earlier: frozenset[Key]


def claim_batch(deliveries: list[Delivery]) -> Claims:
    rows = claim(deliveries)
    others = [(d.job_id, d.recipient) for d in deliveries if (d.job_id, d.recipient) not in rows]
    earlier = settled(others)
    return Claims(rows, frozenset(key for key, success in earlier.items() if success is True))


def record(results: list[tuple[uuid.UUID, bool, str, str]]) -> None:
    """Write outcomes: (row id, success, error, provider message id), in one statement.

    Senders call it as answers arrive, not once per batch: an answer recorded is a message
    never sent again. Committed asynchronously (see the module docstring).
    """
    if not results:
        return
    delay, deadline = 0.25, time.monotonic() + RECORD_PATIENCE_SECONDS
    while True:
        try:
            _write_outcomes(results)
            return
        except (OperationalError, InterfaceError) as exc:
            # These messages went out: an outcome not written is a message sent again.
            if connection.in_atomic_block or time.monotonic() + delay > deadline:
                raise
            logger.warning("cannot record %d outcome(s), retrying in %.1f s: %s", len(results), delay, exc)
            connection.close()  # never reuse the broken connection; the next query reconnects
            time.sleep(delay)
            delay = min(delay * 2, 4.0)


def _write_outcomes(results: list[tuple[uuid.UUID, bool, str, str]]) -> None:
    # One statement, one round trip: outside a transaction it commits on its own, and
    # set_config(..., true) makes that commit asynchronous (BEGIN, SET LOCAL and COMMIT were
    # three more round trips per e-mail).
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE notifications n SET success = r.success, error = r.error, provider_message_id = r.message_id
            FROM unnest(%s::uuid[], %s::boolean[], %s::text[], %s::text[]) AS r(id, success, error, message_id),
                 (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
            WHERE n.id = r.id
            """,
            [
                [row_id for row_id, *_ in results],
                [ok for _, ok, _, _ in results],
                [mask_text(error)[:2000] for _, _, error, _ in results],
                [message_id[:255] for *_, message_id in results],
            ],
        )


def settled(keys: list[tuple[str, str]]) -> dict[tuple[str, str], bool | None]:
    """The current `success` of rows that could not be claimed: True sent, None still in flight."""
    if not keys:
        return {}
    rows = Notification.objects.filter(job_id__in={job_id for job_id, _ in keys}).values_list(
        "job_id", "recipient", "success"
    )
    wanted = set(keys)
    return {
        (job_id, recipient): success
        for job_id, recipient, success in rows
        if job_id is not None and (job_id, recipient) in wanted
    }

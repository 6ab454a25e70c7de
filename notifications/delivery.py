"""The send loop every channel shares: compose → claim → send → record → outcomes.

A channel (e-mail, SMS, push) says only what differs: how it turns a batch of envelopes into
messages (`Item`s, one per recipient), how it sends them and what their errors mean, and what
one job's answers add up to. This loop claims each item's row in the notification ledger
before anything is sent (a redelivered job sends nothing twice), records each answer as soon
as the channel yields it (a worker killed mid-batch resends only what was in flight; see
notifications/ledger.py) and turns the answers into the runner's Outcomes.

`OneAtATime` is the shape of e-mail and SMS: one message per job, sent one after the other
over one connection, under a rate limit shared by every worker (notifications/rate_limit.py).
Push sends many at once and implements `Channel` itself.
"""

from __future__ import annotations

import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from notifications import ledger
from notifications.rate_limit import Allowance, RateLimiter
from supworker.enqueue import redis_connection
from supworker.envelope import Envelope
from supworker.handlers import Outcome, PermanentError, TransientError

logger = logging.getLogger(__name__)
M = TypeVar("M")
M_in = TypeVar("M_in", contravariant=True)
RATE_LIMITED_RETRY_AFTER = 1.0


@dataclass
class Item(Generic[M]):
    """One message to one recipient, and the ledger row that allows sending it (once claimed)."""

    envelope: Envelope
    message: M
    delivery: ledger.Delivery
    row_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Answer(Generic[M]):
    """What became of one item: sent (`message_id`), sent by an earlier delivery of its job, or
    failed (`error`, a PermanentError or TransientError; `note` is what its ledger row says)."""

    item: Item[M]
    message_id: str = ""
    error: Exception | None = None
    note: str = ""
    earlier: bool = False
    # False: it never reached the provider, so its row may be written with the batch's last ones.
    handed_over: bool = True


class Unavailable(Exception):
    """The channel can send nothing now (no credentials, say): every job of the batch is retried."""


class Channel(Protocol[M]):
    name: str  # "e-mail", "SMS", "push": in the errors and logs about it

    def compose(self, envelopes: list[Envelope]) -> tuple[list[Item[M]], dict[str, Outcome]]:
        """The items of a batch, and the outcome of each job that could not be composed."""
        ...

    def send(self, items: list[Item[M]]) -> Iterator[list[Answer[M]]]:
        """Send claimed items; yields answers as they arrive, each item answered once."""
        ...

    def outcome(self, envelope: Envelope, answers: list[Answer[M]]) -> Outcome:
        """One composed job's outcome from the answers about its items."""
        ...


def deliver(envelopes: list[Envelope], channel: Channel[M]) -> list[Outcome]:
    """Send a batch through `channel`: an outcome per envelope, in their order."""
    items, outcomes = channel.compose(envelopes)
    claims = ledger.claim_batch([item.delivery for item in items])
    answers: dict[str, list[Answer[M]]] = {e.job_id: [] for e in envelopes}
    ours: list[Item[M]] = []
    for item in items:
        key = (item.delivery.job_id, item.delivery.recipient)
        if key in claims.rows:
            item.row_id = claims.rows[key]
            ours.append(item)
        elif key in claims.sent_earlier:
            answers[item.envelope.job_id].append(Answer(item, earlier=True))
        else:
            busy = TransientError(f"another worker is sending this {channel.name}", ledger.IN_FLIGHT_RETRY_AFTER)
            answers[item.envelope.job_id].append(Answer(item, error=busy))
    if ours:
        try:
            _send_and_record(channel, ours, answers)
        except Unavailable as exc:
            ledger.record([(item.row_id, False, str(exc), "") for item in ours if item.row_id])
            return [Outcome.failure(e, TransientError(str(exc))) for e in envelopes]
    return [outcomes.get(e.job_id) or channel.outcome(e, answers[e.job_id]) for e in envelopes]


def _send_and_record(channel: Channel[M], items: list[Item[M]], answers: dict[str, list[Answer[M]]]) -> None:
    not_handed_over: list[Answer[M]] = []
    try:
        for answered in channel.send(items):
            # At once: an answer recorded is a message never sent again.
            ledger.record([_row(a) for a in answered if a.handed_over])
            not_handed_over += [a for a in answered if not a.handed_over]
            for answer in answered:
                answers[answer.item.envelope.job_id].append(answer)
    finally:
        ledger.record([_row(a) for a in not_handed_over])


def _row(answer: Answer[M]) -> tuple[uuid.UUID, bool, str, str]:
    assert answer.item.row_id is not None, "only claimed items are sent"
    return answer.item.row_id, answer.error is None, answer.note, answer.message_id


class Sender(Protocol[M_in]):
    """One connection to a provider, for one batch."""

    def send(self, message: M_in) -> str:
        """Send one message; the provider's message id. Raises what the channel's `error_for` reads."""
        ...

    def close(self) -> None: ...


class OneAtATime(ABC, Generic[M]):
    """A channel with one message per job, sent one after the other under a shared rate limit."""

    name: str
    rate_key: str  # the rate limiter's channel name in Redis
    # Whether a batch takes its rate slots from Redis for all its remaining messages at once (one
    # call rather than one per message) or one message at a time.
    rate_slots_for_the_batch: bool = False

    @abstractmethod
    def compose_one(self, envelope: Envelope) -> Item[M]:
        """The job's one message; raises PermanentError (or anything) when it cannot be made."""

    @abstractmethod
    def per_second(self) -> int:
        """The rate limit across all workers, 0 for none."""

    @abstractmethod
    def sender(self) -> Sender[M]: ...

    @abstractmethod
    def error_for(self, exc: Exception, message: M) -> Exception:
        """The PermanentError or TransientError `exc` from Sender.send means (or re-raise it)."""

    def compose(self, envelopes: list[Envelope]) -> tuple[list[Item[M]], dict[str, Outcome]]:
        items: list[Item[M]] = []
        failed: dict[str, Outcome] = {}
        for envelope in envelopes:
            try:
                items.append(self.compose_one(envelope))
            except PermanentError as exc:  # a refusal the channel explains: a bad number, a missing code
                failed[envelope.job_id] = Outcome.failure(envelope, exc)
            except Exception as exc:  # a template or payload problem fails only its item
                logger.exception("could not compose %s for job %s", self.name, envelope.job_id)
                failed[envelope.job_id] = Outcome.failure(envelope, PermanentError(f"cannot compose: {exc}"))
        return items, failed

    def send(self, items: list[Item[M]]) -> Iterator[list[Answer[M]]]:
        allowance = Allowance(RateLimiter(redis_connection(), self.rate_key, self.per_second()))
        sender = self.sender()
        try:
            for done, item in enumerate(items):
                if not allowance.grant(len(items) - done if self.rate_slots_for_the_batch else 1):
                    limited = TransientError(f"{self.name} rate limit reached", retry_after=RATE_LIMITED_RETRY_AFTER)
                    yield [Answer(item, error=limited, note=str(limited), handed_over=False)]
                    continue
                try:
                    message_id = sender.send(item.message)
                except Exception as exc:  # noqa: BLE001 - error_for decides what each failure means
                    error = self.error_for(exc, item.message)
                    logger.warning("%s to %s failed: %s", self.name, item.delivery.recipient, error)
                    yield [Answer(item, error=error, note=f"{type(error).__name__}: {error}")]
                    continue
                yield [Answer(item, message_id=message_id)]
        finally:
            sender.close()

    def outcome(self, envelope: Envelope, answers: list[Answer[M]]) -> Outcome:
        (answer,) = answers
        if answer.earlier:
            return Outcome.success(envelope, {"sent": "earlier"})
        if answer.error is not None:
            return Outcome.failure(envelope, answer.error)
        return Outcome.success(envelope, {"messageId": answer.message_id})

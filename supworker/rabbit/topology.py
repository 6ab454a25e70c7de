"""Exchanges and queues, declared idempotently by the consumer (and the publisher command).

    sup_exchange (topic) ─ media.#        → supworker.media
                         ─ notification.# → supworker.notifications
                         ─ cleanup.#      → supworker.cleanup
                         ─ device.#       → supworker.devices
    default exchange     ─ service_send_otp (the LMS OTP worker's queue, declared as it did)
    supworker.dead (topic) ─ #            → supworker.dead_letters

("supworker" is RABBITMQ_QUEUE_PREFIX; each domain app declares its domains and their queues
in its jobtypes.py, the drawing shows those of today.) Rejected messages are republished to supworker.dead
with the reason in their headers; the domain queues also name it as their RabbitMQ
dead-letter exchange, as a safety net.

During a cut-over (docs/cutover.md), RABBITMQ_ADOPT_QUEUES names queues another service owns:
they are consumed too, checked passively and never declared or bound, and supworker's own
queue of each domain named there is declared but left unbound, so no message is routed to
both services; the operator moves the routing keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from django.conf import settings
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPChannelError, ChannelClosedByBroker

from supworker import jobtypes

log = logging.getLogger(__name__)

NOT_FOUND = 404  # AMQP reply codes
PRECONDITION_FAILED = 406

# Events supworker itself publishes on the main exchange for the messenger. Our media queue is
# bound to media.# (so that unknown media types are dead-lettered, not lost), which also
# catches these: the consumer acks and skips them.
OWN_EVENTS = frozenset({"media.processed", "media.failed"})


def dead_letter_exchange() -> str:
    return f"{settings.CONFIG.rabbitmq_queue_prefix}.dead"


def dead_letter_queue() -> str:
    return f"{settings.CONFIG.rabbitmq_queue_prefix}.dead_letters"


@dataclass(frozen=True)
class Source:
    queue: str
    domain: str  # the name of a supworker.jobtypes.Domain
    binding: str | None  # routing-key pattern on the main exchange; None for the default exchange
    adopted: bool = False  # another service's queue (RABBITMQ_ADOPT_QUEUES): consumed, never declared


def sources() -> list[Source]:
    config = settings.CONFIG
    prefix = config.rabbitmq_queue_prefix
    return [
        *(
            Source(
                config.rabbitmq_queue_name if d.rabbit_queue is None else f"{prefix}.{d.rabbit_queue}",
                d.name,
                d.binding,
            )
            for d in jobtypes.domains().values()
        ),
        *(Source(queue, domain, None, adopted=True) for queue, domain in config.rabbitmq_adopt_queues.items()),
    ]


@dataclass(frozen=True)
class OwnQueue:
    """A queue supworker declares with its own arguments (RABBITMQ_QUEUE_TYPE applies to it)."""

    name: str
    arguments: dict[str, str | int]
    bindings: tuple[tuple[str, str], ...]  # (exchange, routing-key pattern) it is bound with


class QueueMismatch(AMQPChannelError):
    """RabbitMQ holds one of supworker's queues with other arguments than the settings ask for."""


def own_queues() -> list[OwnQueue]:
    """The dead-letter queue and each domain's queue on the main exchange; not the OTP queue
    (declared as the LMS declares it) nor adopted ones (their owner declared them)."""
    config = settings.CONFIG
    declared = sources()
    adopting = {source.domain for source in declared if source.adopted}
    queues = [OwnQueue(dead_letter_queue(), queue_arguments(dead_lettered=False), ((dead_letter_exchange(), "#"),))]
    for source in declared:
        if source.adopted or source.binding is None:
            continue
        # While a domain is adopted, the operator binds its queue (manage.py rabbit_binding).
        bindings = () if source.domain in adopting else ((config.rabbitmq_exchange, source.binding),)
        queues.append(OwnQueue(source.queue, queue_arguments(dead_lettered=True), bindings))
    return queues


def declare_exchanges(channel: BlockingChannel) -> None:
    channel.exchange_declare(settings.CONFIG.rabbitmq_exchange, exchange_type="topic", durable=True)
    channel.exchange_declare(dead_letter_exchange(), exchange_type="topic", durable=True)


def declare(channel: BlockingChannel) -> list[Source]:
    """Declare the exchanges and queues; returns the sources that can be consumed now.

    A classic queue lives on one node of a cluster (the OTP queue always is one): while that
    node is down, RabbitMQ refuses to declare it (NOT_FOUND, its home node is down). Such a queue
    is left out, said in the log, so that the others are consumed and published to meanwhile;
    `reachable` tells when it is back. Each queue is declared on a channel of its own, as the
    refusal closes its channel.
    """
    declare_exchanges(channel)
    down: set[str] = set()
    for queue in own_queues():
        if not _declared(channel, queue.name, partial(_declare_and_bind, queue=queue)):
            down.add(queue.name)
    for source in sources():
        # The OTP queue is declared exactly as the LMS publishers and worker declare it: other
        # arguments would make their declaration fail with PRECONDITION_FAILED.
        lms = source.binding is None and not source.adopted
        if lms and not _declared(channel, source.queue, partial(_declare_lms, queue=source.queue)):
            down.add(source.queue)
    return [source for source in sources() if source.queue not in down]


def reachable(connection: BlockingConnection, queues: list[str]) -> list[str]:
    """Those of `queues` that RabbitMQ can serve now (asked passively)."""
    return [queue for queue in queues if _declared(connection, queue, partial(_passive, queue=queue), quiet=True)]


def _declare_lms(channel: BlockingChannel, queue: str) -> None:
    channel.queue_declare(queue, durable=True)


def _passive(channel: BlockingChannel, queue: str) -> None:
    channel.queue_declare(queue, passive=True)


def _declare_and_bind(channel: BlockingChannel, queue: OwnQueue) -> None:
    declare_own(channel, queue)
    for exchange, routing_key in queue.bindings:
        channel.queue_bind(queue.name, exchange, routing_key=routing_key)


def _declared(
    opener: BlockingChannel | BlockingConnection,
    queue: str,
    action: Callable[[BlockingChannel], object],
    quiet: bool = False,
) -> bool:
    """Run `action` on a new channel; False when RabbitMQ answers that the queue is unavailable."""
    connection = opener.connection if isinstance(opener, BlockingChannel) else opener
    side = connection.channel()
    try:
        action(side)
    except ChannelClosedByBroker as exc:
        if exc.reply_code != NOT_FOUND:
            raise
        if not quiet:
            log.error("queue %s is unavailable, left out until it is back: %s", queue, exc.reply_text)
        return False
    side.close()
    return True


def declare_own(channel: BlockingChannel, queue: OwnQueue) -> None:
    """Declare one of supworker's queues; QueueMismatch says what to do when RabbitMQ has it otherwise."""
    try:
        channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
    except ChannelClosedByBroker as exc:
        if exc.reply_code != PRECONDITION_FAILED:
            raise
        config = settings.CONFIG
        raise QueueMismatch(
            f"RabbitMQ holds the queue {queue.name!r} with other arguments than RABBITMQ_QUEUE_TYPE="
            f"{config.rabbitmq_queue_type} and RABBITMQ_DELIVERY_LIMIT={config.rabbitmq_delivery_limit} ask for "
            f"({exc.reply_text}); stop the consumers and run `manage.py rabbit_move_queues` "
            "(docs/operations.md, Moving to quorum queues)"
        ) from exc


def queue_arguments(dead_lettered: bool) -> dict[str, str | int]:
    """How supworker's own queues are declared (RABBITMQ_QUEUE_TYPE); never the OTP queue nor adopted ones.

    A quorum queue is replicated over the cluster's nodes and survives the loss of a minority.
    Its dead-lettering is at-least-once: a dead-lettered message leaves the queue only once the
    dead-letter queue confirmed it (which requires reject-publish overflow; the queues have no
    length limit, so it never rejects). RABBITMQ_DELIVERY_LIMIT bounds redeliveries: a message
    that kills every consumer that takes it is dead-lettered instead of looping forever.
    RabbitMQ compares these arguments at every declaration: changing either setting for
    existing queues is a move (manage.py rabbit_move_queues).
    """
    config = settings.CONFIG
    arguments: dict[str, str | int] = {}
    if dead_lettered:
        arguments["x-dead-letter-exchange"] = dead_letter_exchange()
    if config.rabbitmq_queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
        if dead_lettered:
            arguments |= {
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-delivery-limit": config.rabbitmq_delivery_limit,
            }
    return arguments


def missing_queues(connection: BlockingConnection, queues: list[str]) -> list[str]:
    """Those of `queues` that do not exist, asked passively: their owners' arguments never clash.

    A passive declare of a missing queue closes its channel, so each is asked on a channel of its own.
    """
    missing = []
    for queue in queues:
        channel = connection.channel()
        try:
            channel.queue_declare(queue, passive=True)
        except ChannelClosedByBroker as exc:
            if exc.reply_code != NOT_FOUND:
                raise
            missing.append(queue)
        else:
            channel.close()
    return missing

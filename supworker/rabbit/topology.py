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

from dataclasses import dataclass

from django.conf import settings
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker

from supworker import jobtypes

NOT_FOUND = 404  # AMQP reply code

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


def declare(channel: BlockingChannel) -> list[Source]:
    exchange = settings.CONFIG.rabbitmq_exchange
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    dead_exchange, dead_queue = dead_letter_exchange(), dead_letter_queue()
    channel.exchange_declare(dead_exchange, exchange_type="topic", durable=True)
    channel.queue_declare(dead_queue, durable=True)
    channel.queue_bind(dead_queue, dead_exchange, routing_key="#")
    declared = sources()
    adopting = {source.domain for source in declared if source.adopted}
    for source in declared:
        if source.adopted:
            continue  # its owner declared it, with arguments of its own: see missing_queues
        if source.binding is None:
            # Declared exactly as the LMS publishers and worker declare it: other arguments
            # would make their declaration fail with PRECONDITION_FAILED.
            channel.queue_declare(source.queue, durable=True)
            continue
        channel.queue_declare(source.queue, durable=True, arguments={"x-dead-letter-exchange": dead_exchange})
        if source.domain not in adopting:  # else the operator binds it (manage.py rabbit_binding)
            channel.queue_bind(source.queue, exchange, routing_key=source.binding)
    return declared


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

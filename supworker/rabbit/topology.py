"""Exchanges and queues, declared idempotently by the consumer (and the publisher command).

    sup_exchange (topic) ─ media.#        → supworker.media
                         ─ notification.# → supworker.notifications
                         ─ cleanup.#      → supworker.cleanup
                         ─ device.#       → supworker.devices
    default exchange     ─ service_send_otp (the LMS OTP worker's queue, declared as it did)
    supworker.dead (topic) ─ #            → supworker.dead_letters

("supworker" is RABBITMQ_QUEUE_PREFIX.) Rejected messages are republished to supworker.dead
with the reason in their headers; the domain queues also name it as their RabbitMQ
dead-letter exchange, as a safety net.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from pika.adapters.blocking_connection import BlockingChannel

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
    domain: str  # key of supworker.payloads.SCHEMAS
    binding: str | None  # routing-key pattern on the main exchange; None for the default exchange


def sources() -> list[Source]:
    config = settings.CONFIG
    prefix = config.rabbitmq_queue_prefix
    return [
        Source(f"{prefix}.media", "media", "media.#"),
        Source(f"{prefix}.notifications", "notification", "notification.#"),
        Source(f"{prefix}.cleanup", "cleanup", "cleanup.#"),
        Source(f"{prefix}.devices", "device", "device.#"),
        Source(config.rabbitmq_queue_name, "otp", None),
    ]


def declare(channel: BlockingChannel) -> list[Source]:
    exchange = settings.CONFIG.rabbitmq_exchange
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    dead_exchange, dead_queue = dead_letter_exchange(), dead_letter_queue()
    channel.exchange_declare(dead_exchange, exchange_type="topic", durable=True)
    channel.queue_declare(dead_queue, durable=True)
    channel.queue_bind(dead_queue, dead_exchange, routing_key="#")
    declared = sources()
    for source in declared:
        if source.binding is None:
            # Declared exactly as the LMS publishers and worker declare it: other arguments
            # would make their declaration fail with PRECONDITION_FAILED.
            channel.queue_declare(source.queue, durable=True)
            continue
        channel.queue_declare(source.queue, durable=True, arguments={"x-dead-letter-exchange": dead_exchange})
        channel.queue_bind(source.queue, exchange, routing_key=source.binding)
    return declared

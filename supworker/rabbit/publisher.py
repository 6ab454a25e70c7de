"""Publishing to RabbitMQ with publisher confirms: a message is handed over or an error raised."""

from __future__ import annotations

import json
from typing import Any

import pika
from django.conf import settings

from supworker.rabbit import topology


def connect() -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(settings.CONFIG.rabbitmq_url))


class Publisher:
    """A confirming channel on its own connection; use as a context manager."""

    def __init__(self, connection: pika.BlockingConnection | None = None):
        self._own = connection is None
        self.connection = connection or connect()
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        topology.declare(self.channel)

    def publish(self, routing_key: str, body: bytes | dict[str, Any], headers: dict[str, Any] | None = None) -> None:
        """Publish to the main exchange, or to the OTP queue when `routing_key` names it."""
        otp_queue = settings.CONFIG.rabbitmq_queue_name
        exchange = "" if routing_key == otp_queue else settings.CONFIG.rabbitmq_exchange
        self.publish_to(exchange, routing_key, body, headers)

    def publish_to(
        self, exchange: str, routing_key: str, body: bytes | dict[str, Any], headers: dict[str, Any] | None = None
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        # mandatory: a message no queue is bound for raises UnroutableError instead of vanishing.
        self.channel.basic_publish(
            exchange,
            routing_key,
            data,
            pika.BasicProperties(content_type="application/json", delivery_mode=2, headers=headers),
            mandatory=True,
        )

    def close(self) -> None:
        if self._own and self.connection.is_open:
            self.connection.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish_job(routing_key: str, body: bytes | dict[str, Any]) -> None:
    """Publish one job and wait for RabbitMQ's confirm: for operators, demos and tests."""
    with Publisher() as publisher:
        publisher.publish(routing_key, body)

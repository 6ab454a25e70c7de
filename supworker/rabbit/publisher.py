"""Publishing to RabbitMQ with publisher confirms: a message is handed over or an error raised."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import pika
from django.conf import settings
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPConnectionError, ChannelWrongStateError, ConnectionClosed, StreamLostError

from supworker.rabbit import topology
from supworker.rabbit.connection import connect

log = logging.getLogger(__name__)

# A connection that broke under a publish (pika raises any of these, depending on when it noticed).
CONNECTION_LOST = (AMQPConnectionError, ConnectionClosed, StreamLostError, ChannelWrongStateError)


class Publisher:
    """A confirming channel on its own connection; use as a context manager."""

    def __init__(self, connection: pika.BlockingConnection | None = None):
        self._own = connection is None
        self.connection = connection or connect("publisher")
        self.channel = self._confirming_channel()

    def _confirming_channel(self) -> BlockingChannel:
        channel = self.connection.channel()
        channel.confirm_delivery()
        topology.declare(channel)
        return channel

    def publish(self, routing_key: str, body: bytes | dict[str, Any], headers: dict[str, Any] | None = None) -> None:
        """Publish to the main exchange, or to the OTP queue when `routing_key` names it."""
        otp_queue = settings.CONFIG.rabbitmq_queue_name
        exchange = "" if routing_key == otp_queue else settings.CONFIG.rabbitmq_exchange
        self.publish_to(exchange, routing_key, body, headers)

    def publish_to(
        self, exchange: str, routing_key: str, body: bytes | dict[str, Any], headers: dict[str, Any] | None = None
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        properties = pika.BasicProperties(content_type="application/json", delivery_mode=2, headers=headers)
        try:
            # mandatory: a message no queue is bound for raises UnroutableError instead of vanishing.
            self.channel.basic_publish(exchange, routing_key, data, properties, mandatory=True)
        except CONNECTION_LOST:
            if not self._own:
                raise
            # The node went away (RABBITMQ_URL may list others): publish again on a new connection.
            # Unconfirmed, the first try may have arrived; consumers recognise a repeated jobId.
            log.warning("RabbitMQ connection lost while publishing to %r; trying again on a new one", routing_key)
            self.close()
            self.connection = connect("publisher")
            self.channel = self._confirming_channel()
            self.channel.basic_publish(exchange, routing_key, data, properties, mandatory=True)

    def close(self) -> None:
        if self._own and self.connection.is_open:
            with contextlib.suppress(*CONNECTION_LOST):
                self.connection.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish_job(routing_key: str, body: bytes | dict[str, Any]) -> None:
    """Publish one job and wait for RabbitMQ's confirm: for operators, demos and tests."""
    with Publisher() as publisher:
        publisher.publish(routing_key, body)

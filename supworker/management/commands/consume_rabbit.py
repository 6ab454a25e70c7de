"""Placeholder for the RabbitMQ consumer: checks the broker is reachable, then idles until stopped.

Ingestion (validation, routing, enqueueing, dead letters) replaces this body; until then the
process exists so that `make run` starts the whole topology and the broker is checked at start.
"""

from __future__ import annotations

import logging
import signal
import threading

import pika
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

log = logging.getLogger("supworker.consumer")


class Command(BaseCommand):
    help = "Consume jobs from RabbitMQ (placeholder: checks the broker and waits)."

    def handle(self, *args, **options) -> None:
        params = pika.URLParameters(settings.CONFIG.rabbitmq_url)
        try:
            pika.BlockingConnection(params).close()
        except pika.exceptions.AMQPError as exc:
            raise CommandError(f"RabbitMQ at {params.host}:{params.port} is unreachable: {exc!r}") from exc
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        log.warning("consume_rabbit: RabbitMQ reachable; message ingestion is not implemented yet, idling")
        stop.wait()
        log.info("consume_rabbit: stopped")

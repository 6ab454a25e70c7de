"""Consume jobs from RabbitMQ and enqueue them on RQ; stops cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand

from supworker.rabbit.consumer import Consumer


class Command(BaseCommand):
    help = "Consume jobs from RabbitMQ (sup_exchange and the OTP queue) and enqueue them on RQ."

    def handle(self, *args, **options) -> None:
        consumer = Consumer()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: consumer.stop())
        consumer.run()

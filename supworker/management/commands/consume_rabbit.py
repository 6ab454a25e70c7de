"""Consume jobs from RabbitMQ and enqueue them on RQ; stops cleanly on SIGTERM or SIGINT.

With WORKER=false (the LMS worker's switch) it consumes nothing: it logs why and waits for its
signal, so a process manager or Kubernetes sees a healthy, idle process rather than a crash loop.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from supworker.rabbit.consumer import Consumer

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Consume jobs from RabbitMQ (sup_exchange and the OTP queue) and enqueue them on RQ."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.CONFIG.worker:
            self._stay_idle()
            return
        consumer = Consumer()
        # What Django and the apps made at start-up lives as long as the process: out of the
        # collector's way, so the full collections a busy consumer triggers do not walk it each time.
        gc.freeze()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: consumer.stop())
        consumer.run()

    def _stay_idle(self) -> None:
        stopped = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopped.set())
        log.warning(
            "WORKER=false: consuming nothing from RabbitMQ (%s and %s stay untouched); RQ workers still run the "
            "jobs already in Redis. Set WORKER=true to consume. Idle until SIGTERM.",
            settings.CONFIG.rabbitmq_queue_name,
            settings.CONFIG.rabbitmq_exchange,
        )
        while not stopped.wait(3600):
            pass
        log.info("WORKER=false: stopped")

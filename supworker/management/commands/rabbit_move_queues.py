"""Move supworker's queues to RABBITMQ_QUEUE_TYPE (and RABBITMQ_DELIVERY_LIMIT), losing nothing.

    RABBITMQ_QUEUE_TYPE=quorum manage.py rabbit_move_queues

Stop every `manage.py consume_rabbit` first; the messenger may keep publishing and the RQ workers
keep working. Then start the consumers with the new settings. See supworker/rabbit/queue_move.py
for how, and docs/operations.md (Moving to quorum queues) for the whole procedure.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from pika.exceptions import AMQPError

from supworker.rabbit.connection import connect
from supworker.rabbit.queue_move import QueueInUse, QueueMove


class Command(BaseCommand):
    help = "Redeclare supworker's RabbitMQ queues as RABBITMQ_QUEUE_TYPE says, moving their messages."

    def handle(self, *args: Any, **options: Any) -> None:
        config = settings.CONFIG
        if config.rabbitmq_adopt_queues:
            raise CommandError("RABBITMQ_ADOPT_QUEUES is set: finish the cut-over (docs/cutover.md) before a move")
        try:
            connection = connect("rabbit_move_queues")
        except AMQPError as exc:
            raise CommandError(f"cannot connect to RabbitMQ: {exc!r}") from exc
        try:
            results = QueueMove(connection, say=self.stdout.write).run()
        except QueueInUse as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if connection.is_open:
                connection.close()
        for result in results:
            detail = f" ({result.messages} message(s))" if result.outcome == "moved" else ""
            self.stdout.write(f"{result.queue}: {result.outcome}{detail}")
        self.stdout.write(self.style.SUCCESS(f"supworker's queues are {config.rabbitmq_queue_type} queues"))

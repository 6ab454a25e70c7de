"""Bind or unbind a queue on the main exchange: the steps of a cut-over (docs/cutover.md).

    manage.py rabbit_binding bind supworker.media 'media.#'
    manage.py rabbit_binding unbind worker_media 'media.#'

The same as `rabbitmqadmin declare binding` / `delete binding`, with supworker's own
RABBITMQ_URL and RABBITMQ_EXCHANGE, and without the management plugin.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from pika.exceptions import AMQPError, ChannelClosedByBroker

from supworker.rabbit import topology
from supworker.rabbit.connection import connect


class Command(BaseCommand):
    help = "Bind a queue to RABBITMQ_EXCHANGE with a routing-key pattern, or remove that binding."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=("bind", "unbind"))
        parser.add_argument("queue", help="an existing queue (rabbitmqctl list_queues)")
        parser.add_argument("pattern", help="routing-key pattern, e.g. 'media.#' (quote it in the shell)")

    def handle(self, *args: Any, action: str, queue: str, pattern: str, **options: Any) -> None:
        exchange = settings.CONFIG.rabbitmq_exchange
        try:
            connection = connect("rabbit_binding")
        except AMQPError as exc:
            raise CommandError(f"cannot connect to RabbitMQ: {exc!r}") from exc
        try:
            if topology.missing_queues(connection, [queue]):
                raise CommandError(f"queue {queue!r} does not exist (rabbitmqctl list_queues name)")
            channel = connection.channel()
            if action == "bind":
                channel.queue_bind(queue, exchange, routing_key=pattern)
            else:  # removing a binding that does not exist is no error in AMQP: it is simply not there
                channel.queue_unbind(queue, exchange, routing_key=pattern)
            state = channel.queue_declare(queue, passive=True).method
        except ChannelClosedByBroker as exc:  # e.g. no such exchange
            raise CommandError(f"RabbitMQ refused: {exc.reply_text}") from exc
        finally:
            connection.close()
        done = (
            f"bound {queue} to {exchange} with {pattern!r}"
            if action == "bind"
            else f"unbound {queue} from {exchange} ({pattern!r})"
        )
        self.stdout.write(
            f"{done}; {queue}: {state.message_count} message(s) ready, {state.consumer_count} consumer(s)"
        )

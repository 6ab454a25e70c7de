"""Publish one job to RabbitMQ, with publisher confirms: for operators, demos and tests.

manage.py publish_job media.image '{"type": "image", "s3Key": "...", ...}'
manage.py publish_job notification.push @job.json
manage.py publish_job service_send_otp '{"email": "a@example.com", "otp": "123456"}'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from pika.exceptions import AMQPError

from supworker.rabbit.publisher import publish_job


class Command(BaseCommand):
    help = "Publish a job (JSON text, or @file) to sup_exchange with a routing key, or to the OTP queue."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "routing_key", help="e.g. media.image, notification.push, cleanup.stories, service_send_otp"
        )
        parser.add_argument("payload", help="the job as JSON, or @path to a file holding it")

    def handle(self, *args: Any, routing_key: str, payload: str, **options: Any) -> None:
        text = Path(payload[1:]).read_text() if payload.startswith("@") else payload
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise CommandError(f"payload is not JSON: {exc}") from None
        try:
            publish_job(routing_key, body)
        except AMQPError as exc:
            raise CommandError(f"RabbitMQ did not take the job: {exc!r}") from None
        self.stdout.write(f"published to {routing_key}")

"""django-rq's rqscheduler, which first registers supworker's cron table."""

from __future__ import annotations

import logging
from typing import Any

import django_rq
from django_rq.management.commands.rqscheduler import Command as RQSchedulerCommand

from supworker.schedule import register

log = logging.getLogger(__name__)


class Command(RQSchedulerCommand):
    help = "Register the cron table, then run rq-scheduler (moves due jobs to their RQ queues)."

    def handle(self, *args: Any, **options: Any) -> None:
        report = register(django_rq.get_scheduler(options["queue"]))
        log.info("cron table registered: %s", {kind: len(ids) for kind, ids in report.items()})
        super().handle(*args, **options)

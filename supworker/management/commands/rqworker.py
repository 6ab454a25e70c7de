"""django-rq's rqworker, where a worker kind stands for its queues and RQ's scheduler is on.

`rqworker media` listens to media_high, then media (the worker kinds of supworker/jobtypes.py); a queue's
name stands for that queue, so `rqworker media_high media` is what it always was. The scheduler
moves retries back to their queue when they are due: without one on a queue, every retry of its
jobs waits for ever, so it runs unless --without-scheduler (RQ lets one worker per queue hold it).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from django_rq.management.commands.rqworker import Command as RQWorkerCommand

from supworker.management.worker_names import add_name_arguments, queues_to_work_on


class Command(RQWorkerCommand):
    help = (
        "Run an RQ worker on a worker kind (media, notifications, cleanup: its queues, highest "
        "priority first) or on the queues named, with RQ's scheduler for retries."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        add_name_arguments(parser)
        parser.add_argument(
            "--without-scheduler",
            action="store_false",
            dest="with_scheduler",
            help="leave due retries to another worker's scheduler (on by default)",
        )
        parser.set_defaults(with_scheduler=True)
        with_scheduler = parser._option_string_actions["--with-scheduler"]
        with_scheduler.help = "run RQ's scheduler: the default, accepted for older command lines"

    def handle(self, *names: str, **options: Any) -> None:
        super().handle(*queues_to_work_on(names, options), **options)

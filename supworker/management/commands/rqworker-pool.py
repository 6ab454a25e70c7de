"""django-rq's rqworker-pool, where a worker kind stands for its queues, as in `rqworker`.

RQ's pool always runs its workers with the scheduler, so retries come back here as well.
"""

from __future__ import annotations

import importlib
from typing import Any

from django.core.management.base import CommandParser

from supworker.management.worker_names import add_name_arguments, queues_to_work_on

# The module's name has a hyphen: it cannot be imported with an import statement.
RQWorkerPoolCommand = importlib.import_module("django_rq.management.commands.rqworker-pool").Command


class Command(RQWorkerPoolCommand):  # type: ignore[misc,valid-type]  # a base loaded by name
    help = "Run a pool of RQ workers on a worker kind (media, notifications, cleanup) or on the queues named."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        add_name_arguments(parser)

    def handle(self, *names: str, **options: Any) -> None:
        super().handle(*queues_to_work_on(names, options), **options)

"""Register the cron table with rq-scheduler (rqscheduler does this at start) and show it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from supworker.schedule import next_runs, register, scheduler


class Command(BaseCommand):
    help = "Register the cron table with rq-scheduler (idempotent) and print it with next run times."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--list", dest="list_only", action="store_true", help="print the table, change nothing")

    def handle(self, *args: Any, list_only: bool, **options: Any) -> None:
        rq_scheduler = scheduler()
        if not list_only:
            report = register(rq_scheduler)
            self.stdout.write(", ".join(f"{kind}: {len(ids)}" for kind, ids in report.items()))
        for entry, when in next_runs(rq_scheduler):
            self.stdout.write(
                f"{entry.name:<16} {entry.cron:<16} next {when:%Y-%m-%d %H:%M} UTC" if when else entry.name
            )

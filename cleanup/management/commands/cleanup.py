"""manage.py cleanup <name> [--dry-run] [--batch-size N] [--older-than DURATION] [--time-budget S]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from cleanup import progress
from cleanup.base import Options, parse_duration
from cleanup.registry import CLEANUPS
from supworker.envelope import Envelope
from supworker.handlers import one_at_a_time
from supworker.runner import run_here


class Command(BaseCommand):
    help = "Run one cleanup now, in this process, with a progress bar (on a terminal) and a summary."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", choices=sorted(CLEANUPS))
        parser.add_argument("--dry-run", action="store_true", help="count what would change, change nothing")
        parser.add_argument("--batch-size", type=int, help="rows per batch (one transaction each)")
        parser.add_argument("--older-than", help="override the age limit: 90s, 15m, 24h, 30d, 2w")
        parser.add_argument(
            "--time-budget", type=float, default=None, help="stop starting batches after this many seconds"
        )

    def handle(
        self,
        *args: Any,
        name: str,
        dry_run: bool,
        batch_size: int | None,
        older_than: str | None,
        time_budget: float | None,
        **options: Any,
    ) -> None:
        try:
            age = parse_duration(older_than) if older_than is not None else None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if batch_size is not None and not 1 <= batch_size <= 100_000:
            raise CommandError("--batch-size must be from 1 to 100000")
        # From a terminal there is no job timeout to respect: run until done unless told otherwise.
        budget = time_budget if time_budget is not None else 24 * 3600
        run_options = Options(dry_run=dry_run, batch_size=batch_size, older_than=age, time_budget_s=budget)
        # The options a cleanup job's `data` takes, kept in the record and the dead letter: a
        # requeue of this run from the admin cleans what it was asked to clean.
        data = {"dryRun": dry_run, "batchSize": batch_size, "olderThan": older_than}
        envelope = Envelope(
            job_id=f"cli:{name}:{timezone.now():%Y%m%dT%H%M%S}",
            job_type=f"cleanup.{name}",
            payload={"type": name, "data": {key: value for key, value in data.items() if value is not None}},
        )

        with progress.reporter() as report:

            def run_cleanup(item: Envelope) -> dict[str, Any]:
                # The queued job's handler (cleanup/jobs.py) less what a terminal must not do:
                # hand the rest of an out-of-time run to a worker. Plus this terminal's progress.
                return CLEANUPS[name](run_options, progress=report)

            # On Ctrl-C too, run_here records the run failed before the interrupt goes on.
            settled = run_here([envelope], one_at_a_time(run_cleanup))
        if not settled:  # records.start skipped it: the same job id succeeded within this second
            raise CommandError(f"cleanup {name}: {envelope.job_id} has run already; try again")
        outcome = settled[0].outcome
        if not outcome.ok:
            raise CommandError(f"cleanup {name} failed: {outcome.error}")  # masked, as recorded
        self._print_summary(outcome.result)

    def _print_summary(self, summary: dict[str, Any]) -> None:
        if "skipped" in summary:
            self.stdout.write(self.style.WARNING(f"{summary['cleanup']}: skipped, {summary['skipped']}"))
            return
        mode = " (dry run: nothing changed)" if summary["dry_run"] else ""
        self.stdout.write(self.style.SUCCESS(f"{summary['cleanup']}{mode}"))
        width = max([28, *map(len, summary["counts"])])  # retention's names are longer than most
        for key, value in sorted(summary["counts"].items()):
            self.stdout.write(f"  {key:<{width}} {value:>12,}")
        self.stdout.write(
            f"  {'batches':<{width}} {summary['batches']:>12,}\n"
            f"  {'slowest batch':<{width}} {summary['slowest_batch_s']:>11.3f}s\n"
            f"  {'duration':<{width}} {summary['duration_s']:>11.3f}s"
        )

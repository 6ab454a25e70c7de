"""manage.py erase_user USER_ID [--dry-run] [--batch-size N]"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from privacy import erasure, progress
from privacy.management.commands._shared import print_counts, run_now
from privacy.models import ErasureReceipt
from supworker.envelope import Envelope


class Command(BaseCommand):
    help = "Erase everything supworker holds of one user, now, in this process, with a progress bar and a receipt."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user_id", type=uuid.UUID)
        parser.add_argument("--dry-run", action="store_true", help="count what would go, remove nothing")
        parser.add_argument("--batch-size", type=int, help="rows per step (one transaction each)")

    def handle(self, *args: Any, user_id: uuid.UUID, dry_run: bool, batch_size: int | None, **options: Any) -> None:
        if batch_size is not None and not 1 <= batch_size <= 100_000:
            raise CommandError("--batch-size must be from 1 to 100000")
        if dry_run:
            self.stdout.write(self.style.SUCCESS("erasure (dry run: nothing changed); rows to remove:"))
            print_counts(self.stdout, erasure.preview(user_id))
            return
        with progress.bar("erasure") as update:

            def erase(envelope: Envelope) -> dict[str, Any]:
                # Counted once this run's own job record exists: it is one of the rows masked.
                expected = erasure.preview(user_id)
                counted = [name for name, n in expected.items() if n is not None]  # the bar's total counts these
                total = sum(expected[name] or 0 for name in counted)

                def step(receipt: ErasureReceipt, holding: str) -> None:
                    update(sum(receipt.counts.get(name, 0) for name in counted), holding, total)

                update(0, "", total)
                return erasure.erase(user_id, envelope.job_id, batch_size, step)

            result = run_now("user.erase", {"type": "erase", "userId": str(user_id)}, erase)
        self.stdout.write(self.style.SUCCESS(f"erasure done, receipt {result['receipt']}"))
        print_counts(self.stdout, result["counts"])

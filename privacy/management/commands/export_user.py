"""manage.py export_user USER_ID [--email ADDRESS] [--dry-run]"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from pydantic import ValidationError

from privacy import export, progress
from privacy.jobtypes import UserJob
from privacy.management.commands._shared import print_counts, run_now


class Command(BaseCommand):
    help = "Export everything supworker holds of one user into the media store, now, with a progress bar."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user_id", type=uuid.UUID)
        parser.add_argument("--email", help="send the download link there")
        parser.add_argument("--dry-run", action="store_true", help="count what the export would hold, write nothing")

    def handle(self, *args: Any, user_id: uuid.UUID, email: str | None, dry_run: bool, **options: Any) -> None:
        payload = {"type": "export", "userId": str(user_id)} | ({"email": email} if email else {})
        try:
            UserJob.model_validate(payload)  # the address checked as the consumer checks it
        except ValidationError as exc:
            raise CommandError(f"--email: {exc.errors()[0]['msg']}") from None
        expected = export.preview(user_id)
        if dry_run:
            self.stdout.write(self.style.SUCCESS("export (dry run: nothing written); rows it would hold:"))
            print_counts(self.stdout, expected)
            return
        with progress.bar("export") as update:
            result = run_now("user.export", payload, lambda envelope: export.export(
                user_id, envelope.job_id, email, lambda what, done: update(done, what, None)))  # fmt: skip
        self.stdout.write(self.style.SUCCESS(f"export written: {result['key']} ({result['bytes']:,} bytes)"))
        print_counts(self.stdout, result["counts"])

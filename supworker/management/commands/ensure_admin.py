"""Create the first admin account, once, with a generated password that is printed and not stored."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Create an admin account with a generated password if no superuser exists yet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--url", default="http://127.0.0.1:8000/admin/")

    def handle(self, *args: Any, username: str, url: str, **options: Any) -> None:
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write(f"Admin: sign in at {url} (reset a password with `manage.py changepassword`).")
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created the admin account. Sign in at {url} as {username!r} with password {password!r}.\n"
                "This password is shown once and stored nowhere; change it with "
                f"`manage.py changepassword {username}`."
            )
        )

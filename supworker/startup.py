"""Start-up guard shared by manage.py and the WSGI entry point."""

from __future__ import annotations

import os
import sys

from supworker.env import ConfigError


def load_settings_or_exit() -> None:
    """Import the settings now; a configuration error ends the process with one clear line."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "supworker.settings")
    from django.conf import settings

    try:
        settings.INSTALLED_APPS  # noqa: B018 - forces the settings module to load
    except ConfigError as exc:
        sys.stderr.write(f"supworker: configuration error: {exc}\n")
        raise SystemExit(2) from None

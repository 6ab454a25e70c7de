"""System checks run by every management command: settings that would quietly not deliver."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Warning, register

CONSOLE = "django.core.mail.backends.console.EmailBackend"


@register()
def email_is_delivered_in_production(app_configs: Any, **kwargs: Any) -> list[Warning]:
    """The LMS worker refused to start without SMTP_HOST; supworker prints e-mails without it.

    That default lets a fresh clone run with no `.env`; in production it would print every OTP
    e-mail to the log instead of sending it, so say so wherever a command starts.
    """
    if not settings.PRODUCTION or settings.EMAIL_BACKEND != CONSOLE:
        return []
    return [
        Warning(
            "e-mails and OTP codes are written to the console, not sent",
            hint="set SMTP_HOST (and SMTP_USER, SMTP_PASS, SENDER_EMAIL) or EMAIL_BACKEND=anymail.backends.<esp>...",
            id="notifications.W001",
        )
    ]

"""System checks run by every management command: settings that would quietly not deliver."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Warning, register

from notifications.webhooks import WEBHOOKS

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


@register()
def bounces_are_received_in_production(app_configs: Any, **kwargs: Any) -> list[Warning]:
    """With SendGrid or Mailgun sending, their bounces and complaints arrive only through an
    authenticated tracking webhook (notifications/webhooks.py); without its credentials the
    webhook refuses every call, and addresses that bounce keep being mailed."""
    if not settings.PRODUCTION:
        return []
    warnings = []
    sending_esp = settings.EMAIL_BACKEND.removeprefix("anymail.backends.").removesuffix(".EmailBackend")
    for webhook in WEBHOOKS:
        missing = webhook.missing(settings.CONFIG.notifications)
        if webhook.esp == sending_esp and missing:
            warnings.append(
                Warning(
                    f"e-mail goes through {webhook.esp}, but its bounces and complaints are not received",
                    hint=f"set {missing} and point {webhook.esp}'s event webhook at /anymail/{webhook.esp}/tracking/",
                    id="notifications.W002",
                )
            )
    return warnings

"""The ESPs' tracking webhooks, at the paths anymail.urls gives them: django-anymail's own views
for SendGrid and Mailgun, each behind a gate.

anymail checks the caller (HTTP basic auth against ANYMAIL_WEBHOOK_SECRET, SendGrid's ECDSA
signature when ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY is set, Mailgun's HMAC
signature with ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY), parses the ESP's events and sends each on
its `tracking` signal (received by notifications/suppression.py).

The gate runs anymail's view only once its credentials are set: left to itself, anymail's
SendGrid view would accept anyone when no secret is set (with a warning) and its Mailgun view
would fall back to the API key, or answer 500. Until then every call is refused, naming the
setting to set, so forged bounces can never empty the mailing list. A caller anymail refuses
gets 401 and one warning line, instead of Django's 400 and a logged traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.webhooks.base import AnymailCoreWebhookView
from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from notifications.config import NotificationsConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackingWebhook:
    esp: str  # the path segment anymail.urls uses: /anymail/<esp>/tracking/
    view: type[AnymailCoreWebhookView]
    # The settings that authenticate the ESP's calls, "" once one of them is set.
    missing: Callable[[NotificationsConfig], str]


WEBHOOKS = (
    TrackingWebhook(
        "sendgrid",
        SendGridTrackingWebhookView,
        lambda c: (
            ""
            if c.webhook_secret or c.sendgrid_webhook_verification_key
            else "ANYMAIL_WEBHOOK_SECRET (and optionally ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY)"
        ),
    ),
    TrackingWebhook(
        "mailgun",
        MailgunTrackingWebhookView,
        lambda c: "" if c.mailgun_webhook_signing_key else "ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY",
    ),
)
METHODS = ["POST", "HEAD", "OPTIONS"]  # anymail's: ESPs may check a URL with HEAD when it is set up


def gated(webhook: TrackingWebhook) -> Callable[[HttpRequest], HttpResponse]:
    anymail_view = webhook.view.as_view()

    @csrf_exempt  # the ESP has no CSRF token; its calls are authenticated by anymail
    def view(request: HttpRequest) -> HttpResponse:
        if request.method not in METHODS:
            return HttpResponseNotAllowed(METHODS)
        missing = webhook.missing(settings.CONFIG.notifications)
        if missing:
            logger.warning("refused a call to the %s tracking webhook: set %s", webhook.esp, missing)
            return refused(f"the {webhook.esp} tracking webhook authenticates no caller yet: set {missing}")
        try:
            return anymail_view(request)
        except AnymailWebhookValidationFailure as exc:
            # Django would answer 400 and log this SuspiciousOperation as an error with its
            # traceback; one line is enough, and the caller learns no more than anymail meant to tell.
            logger.warning("refused a call to the %s tracking webhook: %s", webhook.esp, exc)
            return refused("not authenticated: missing or wrong basic auth, or a bad signature")

    return view


def refused(error: str) -> JsonResponse:
    """401, with the challenge that makes an HTTP client that waits for one send its basic auth."""
    response = JsonResponse({"error": error}, status=401)
    response["WWW-Authenticate"] = 'Basic realm="ESP tracking webhook"'
    return response

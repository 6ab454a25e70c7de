"""Fixtures for the notification tests: loopback FCM, SMTP and SMS servers wired into settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from tests.notification_helpers import forget_fcm_apps
from tests.notification_servers import FcmServer, SendGridServer, SmsServer, SmtpServer

# Retries in tests wait tens of milliseconds, not seconds (as tests/ingest_fixtures.py does).
FAST_RETRIES = {"base_delay_ms": 50, "max_delay_ms": 200}


@pytest.fixture
def fcm_server(settings) -> Iterator[FcmServer]:
    server = FcmServer()
    server.start()
    settings.CONFIG = dataclasses.replace(settings.CONFIG, **FAST_RETRIES).with_section(
        "notifications", fcm_endpoint=server.url, fcm_access_token=server.token, fcm_project_id="sup-loopback"
    )
    yield server
    server.stop()
    forget_fcm_apps()


@pytest.fixture
def smtp_server(settings) -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = settings.CONFIG.notifications.sender_email
    settings.CONFIG = dataclasses.replace(settings.CONFIG, **FAST_RETRIES)
    yield server
    server.stop()


@pytest.fixture
def sms_server(settings) -> Iterator[SmsServer]:
    server = SmsServer()
    server.start()
    settings.CONFIG = dataclasses.replace(settings.CONFIG, **FAST_RETRIES).with_section(
        "notifications",
        sms_backend="vonage",
        sms_api_url=server.url,
        sms_api_key=server.key,
        sms_api_secret=server.secret,
        sms_from_number="+14155550100",
    )
    yield server
    server.stop()


@pytest.fixture
def sendgrid_server() -> Iterator[SendGridServer]:
    """SendGrid's mail/send API on loopback; workers reach it through `environment()` in theirs."""
    server = SendGridServer()
    server.start()
    yield server
    server.stop()

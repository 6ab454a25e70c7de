"""The notification settings: defaults, validation, and the SDK set-up they lead to."""

from __future__ import annotations

import os

import pytest

from supworker.config import load_config
from supworker.env import ConfigError

NO_ENV_FILE = {"SUPWORKER_ENV_FILE": os.devnull}


def load(**environ: str):
    """The notifications section, read from `environ` the way the processes read it."""
    return load_config(NO_ENV_FILE | environ).notifications


def test_defaults():
    config = load()
    assert config.fcm_endpoint == "https://fcm.googleapis.com"
    assert (config.fcm_access_token, config.fcm_project_id) == ("", "")
    assert (config.fcm_timeout_s, config.fcm_ttl_s) == (10, 86400)
    assert (config.email_rate_per_second, config.sms_rate_per_second) == (50, 10)
    assert config.email_backend == "", "chosen by SMTP_HOST in supworker/settings.py"
    assert config.fcm_android_silent_channel_id == "", "silent-mode pushes keep their own channel"


def test_email_backend_names_and_anymail_paths():
    assert load(EMAIL_BACKEND="file").email_backend == "django.core.mail.backends.filebased.EmailBackend"
    anymail = "anymail.backends.sendgrid.EmailBackend"
    assert load(EMAIL_BACKEND=anymail).email_backend == anymail


def test_anymail_settings_come_from_anymail_variables():
    config = load(ANYMAIL_POSTMARK_SERVER_TOKEN="pm-token", ANYMAIL_POSTMARK_API_URL="http://127.0.0.1:9/", ANYMAIL_="")
    assert config.anymail == {"POSTMARK_API_URL": "http://127.0.0.1:9/", "POSTMARK_SERVER_TOKEN": "pm-token"}
    assert load().anymail == {}


def test_the_webhook_credentials_are_read_for_anymail_and_hidden_from_the_logs():
    config = load(
        ANYMAIL_WEBHOOK_SECRET="hook-user:hook-password-7f3a",
        ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY="mg-signing-key-9c1e",
        ANYMAIL_MAILGUN_API_KEY="mg-api-key-4d2b",
        ANYMAIL_MAILGUN_SENDER_DOMAIN="mail.example.com",
    )
    assert config.webhook_secret == "hook-user:hook-password-7f3a"
    assert config.mailgun_webhook_signing_key == "mg-signing-key-9c1e"
    # What anymail's views read: settings.ANYMAIL, made of the same variables.
    assert config.anymail["WEBHOOK_SECRET"] == config.webhook_secret
    assert config.anymail["MAILGUN_WEBHOOK_SIGNING_KEY"] == config.mailgun_webhook_signing_key
    hidden = config.secrets()
    assert {"hook-user:hook-password-7f3a", "hook-password-7f3a", "mg-signing-key-9c1e", "mg-api-key-4d2b"} <= hidden
    assert "mail.example.com" not in hidden


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FCM_ENDPOINT": "ftp://fcm.local"}, "FCM_ENDPOINT"),
        ({"FCM_TTL_SECONDS": "-1"}, "FCM_TTL_SECONDS"),
        ({"EMAIL_RATE_PER_SECOND": "lots"}, "EMAIL_RATE_PER_SECOND"),
        ({"SMS_RATE_PER_SECOND": "-5"}, "SMS_RATE_PER_SECOND"),
        ({"EMAIL_BACKEND": "myapp.Backend"}, "EMAIL_BACKEND"),
        ({"FCM_ANDROID_SILENT_CHANNEL_ID": "muted chats"}, "FCM_ANDROID_SILENT_CHANNEL_ID must be 1-100 letters"),
        ({"ANYMAIL_WEBHOOK_SECRET": "only-a-password"}, "ANYMAIL_WEBHOOK_SECRET must be user:password"),
        ({"ANYMAIL_WEBHOOK_SECRET": "user:"}, "ANYMAIL_WEBHOOK_SECRET"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(environ, message):
    with pytest.raises(ConfigError, match=message):
        load(**environ)

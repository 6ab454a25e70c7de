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


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FCM_ENDPOINT": "ftp://fcm.local"}, "FCM_ENDPOINT"),
        ({"FCM_TTL_SECONDS": "-1"}, "FCM_TTL_SECONDS"),
        ({"EMAIL_RATE_PER_SECOND": "lots"}, "EMAIL_RATE_PER_SECOND"),
        ({"SMS_RATE_PER_SECOND": "-5"}, "SMS_RATE_PER_SECOND"),
        ({"EMAIL_BACKEND": "myapp.Backend"}, "EMAIL_BACKEND"),
        ({"FCM_ANDROID_SILENT_CHANNEL_ID": "muted chats"}, "FCM_ANDROID_SILENT_CHANNEL_ID must be 1-100 letters"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(environ, message):
    with pytest.raises(ConfigError, match=message):
        load(**environ)

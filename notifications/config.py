"""The notifications section of the settings, `settings.CONFIG.notifications`: FCM and its
service account, SMTP or an ESP through django-anymail, the SMS provider, channel rate limits."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from supworker.config import BASE_DIR, env_path
from supworker.env import EnvReader

SECTION = "notifications"
# Google's OAuth 2.0 token endpoint, the token_uri of every service-account key file it issues.
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
EMAIL_BACKENDS = {
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
    "console": "django.core.mail.backends.console.EmailBackend",
    "file": "django.core.mail.backends.filebased.EmailBackend",
}
# An Android notification channel id, in a push's `androidChannelId` and in the settings.
ANDROID_CHANNEL_ID = re.compile(r"[A-Za-z0-9._\-]{1,100}")
ANDROID_CHANNEL_ID_RULE = "must be 1-100 letters, digits, '.', '_' or '-' (an Android notification channel id)"


@dataclass(frozen=True)
class NotificationsConfig:
    firebase_project_id: str
    firebase_client_email: str
    firebase_private_key: str
    firebase_token_uri: str  # where the service account's JWT is exchanged for an access token
    fcm_endpoint: str
    fcm_access_token: str
    fcm_project_id: str
    fcm_timeout_s: int
    fcm_ttl_s: int
    fcm_http_client: str  # curl (libcurl under firebase-admin) or requests (the SDK's own adapter)
    # The Android channel of pushes of a chat the user muted in silent mode ("": the push's own).
    fcm_android_silent_channel_id: str
    smtp_host: str
    smtp_port: int
    smtp_user: str
    smtp_password: str
    smtp_security: str
    sender_email: str
    email_backend: str  # Django dotted path, or "" to choose by SMTP_HOST (supworker/settings.py)
    email_file_path: Path
    anymail: dict[str, str]  # ANYMAIL_<ESP>_<SETTING> variables, prefix stripped: settings.ANYMAIL
    # The credentials of the ESPs' tracking webhooks (notifications/webhooks.py), also in `anymail`,
    # which is what anymail's views read: named here to be checked, and hidden from the logs.
    webhook_secret: str  # user:password, HTTP basic auth on every webhook call
    sendgrid_webhook_verification_key: str  # SendGrid's public key: its ECDSA signature is checked too
    mailgun_webhook_signing_key: str  # Mailgun's HMAC key: its signature is checked
    email_rate_per_second: int
    sms_backend: str
    sms_api_url: str
    sms_api_key: str
    sms_api_secret: str
    sms_from_number: str
    sms_rate_per_second: int
    notification_log_retention_days: int  # 0: the log keeps every row

    def secrets(self) -> set[str]:
        """What the log filter hides (supworker/logging_config.py); the PEM key line by line."""
        pem_lines = {line.strip() for line in self.firebase_private_key.splitlines() if "-----" not in line}
        # The ESP's API key or token, the webhook secret and signing key (and the secret's password alone).
        esp = {value for name, value in self.anymail.items() if name.endswith(("_KEY", "_TOKEN", "_SECRET"))}
        webhook_password = self.webhook_secret.partition(":")[2]
        return {self.smtp_password, self.sms_api_key, self.sms_api_secret, self.fcm_access_token, *pem_lines, *esp,
                webhook_password}  # fmt: skip


def _email_backend(env: EnvReader) -> str:
    """smtp, console, file, or a django-anymail backend's dotted path; empty: smtp when SMTP_HOST is set."""
    value = env.str("EMAIL_BACKEND")
    if not value or value in EMAIL_BACKENDS:
        return EMAIL_BACKENDS.get(value, "")
    if not value.startswith("anymail.backends.") or not value.endswith(".EmailBackend"):
        env.fail("EMAIL_BACKEND", "must be smtp, console, file or anymail.backends.<provider>.EmailBackend")
        return ""
    return value


def _android_channel_id(env: EnvReader, name: str) -> str:
    value = env.str(name)
    if value and not ANDROID_CHANNEL_ID.fullmatch(value):
        env.fail(name, ANDROID_CHANNEL_ID_RULE)
        return ""
    return value


def _anymail(env: EnvReader) -> dict[str, str]:
    """django-anymail's settings from ANYMAIL_* variables, e.g. ANYMAIL_SENDGRID_API_KEY → SENDGRID_API_KEY."""
    return {
        name.removeprefix("ANYMAIL_"): value.strip()
        for name, value in sorted(env.environ.items())
        if name.startswith("ANYMAIL_") and len(name) > len("ANYMAIL_") and value.strip()
    }


def _webhook_secret(env: EnvReader) -> str:
    """anymail compares it with the basic auth the ESP sends, always user:password."""
    value = env.str("ANYMAIL_WEBHOOK_SECRET")
    user, colon, password = value.partition(":")
    if value and not (user and colon and password):
        env.fail("ANYMAIL_WEBHOOK_SECRET", "must be user:password (two random strings), as in the webhook URL")
        return ""
    return value


def read(env: EnvReader) -> NotificationsConfig:
    env.together("FIREBASE_PROJECT_ID", "FIREBASE_CLIENT_EMAIL", "FIREBASE_PRIVATE_KEY")
    # Hosting panels store the PEM key on one line with literal "\n" sequences.
    private_key = env.str("FIREBASE_PRIVATE_KEY").replace("\\n", "\n")
    if private_key and "PRIVATE KEY-----" not in private_key:
        env.fail("FIREBASE_PRIVATE_KEY", "must be the PEM private key of the service account")

    smtp_port = env.int("SMTP_PORT", 587, 1, 65535)
    smtp_security = env.choice(
        "SMTP_SECURITY",
        choices={"starttls": "starttls", "ssl": "ssl", "none": "none"},
        default="ssl" if smtp_port == 465 else "starttls",
    )
    sms_backend = env.choice("SMS_BACKEND", choices={"console": "console", "vonage": "vonage"}, default="console")
    if sms_backend != "console":
        for name in ("SMS_API_KEY", "SMS_API_SECRET", "SMS_FROM_NUMBER"):
            env.str(name, required=True)

    return NotificationsConfig(
        firebase_project_id=env.str("FIREBASE_PROJECT_ID"),
        firebase_client_email=env.email("FIREBASE_CLIENT_EMAIL"),
        firebase_private_key=private_key,
        firebase_token_uri=env.url("FIREBASE_TOKEN_URI", schemes=("http", "https"), default=GOOGLE_TOKEN_URI),
        fcm_endpoint=env.url("FCM_ENDPOINT", schemes=("http", "https"), default="https://fcm.googleapis.com"),
        fcm_access_token=env.str("FCM_ACCESS_TOKEN"),
        fcm_project_id=env.str("FCM_PROJECT_ID"),
        fcm_timeout_s=env.int("FCM_TIMEOUT_SECONDS", 10, 1, 120),
        fcm_ttl_s=env.int("FCM_TTL_SECONDS", 86400, 0, 28 * 86400),
        fcm_http_client=env.choice("FCM_HTTP_CLIENT", choices={"curl": "curl", "requests": "requests"}, default="curl"),
        fcm_android_silent_channel_id=_android_channel_id(env, "FCM_ANDROID_SILENT_CHANNEL_ID"),
        smtp_host=env.str("SMTP_HOST"),
        smtp_port=smtp_port,
        smtp_user=env.str("SMTP_USER"),
        smtp_password=env.str("SMTP_PASSWORD", "SMTP_PASS"),
        smtp_security=smtp_security,
        sender_email=env.email("SENDER_EMAIL", default="SUP Messenger <no-reply@supworker.local>"),
        email_backend=_email_backend(env),
        email_file_path=env_path(env, "EMAIL_FILE_PATH", BASE_DIR / "var" / "mail"),
        anymail=_anymail(env),
        webhook_secret=_webhook_secret(env),
        sendgrid_webhook_verification_key=env.str("ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY"),
        mailgun_webhook_signing_key=env.str("ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY"),
        email_rate_per_second=env.int("EMAIL_RATE_PER_SECOND", 50, 0, 100_000),
        sms_backend=sms_backend,
        sms_api_url=env.url("SMS_API_URL", schemes=("http", "https"), default="https://rest.nexmo.com"),
        sms_api_key=env.str("SMS_API_KEY"),
        sms_api_secret=env.str("SMS_API_SECRET"),
        sms_from_number=env.phone("SMS_FROM_NUMBER"),
        sms_rate_per_second=env.int("SMS_RATE_PER_SECOND", 10, 0, 100_000),
        notification_log_retention_days=env.int("NOTIFICATION_LOG_RETENTION_DAYS", 90, 0, 36500),
    )

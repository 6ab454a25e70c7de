"""Every setting supworker reads from its environment, parsed and checked in one place.

The variable names are the ones operators of the Node worker and the LMS OTP worker already
use, so an existing `.env` keeps working. Defaults point at the project-local services that
`make services` starts, so a fresh clone runs with no `.env` at all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from supworker.env import ConfigError, EnvReader

BASE_DIR = Path(__file__).resolve().parent.parent

# Google's OAuth 2.0 token endpoint, the token_uri of every service-account key file it issues.
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
DEV_SECRET_KEY = "dev-only-insecure-key-never-use-in-production"  # noqa: S105 - development default
LOG_LEVELS = {name.lower(): name for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")} | {"warn": "WARNING"}


CRON_DEFAULTS = {  # UTC, as in the Node worker's schedule
    "stories": "0 * * * *",
    "sessions": "0 0 * * *",
    "messages": "0 1 * * *",
    "temp_files": "0 2 * * *",
    "maintenance": "0 3 * * *",
    "prekeys": "0 4 * * *",
    "statistics": "0 */6 * * *",
    "websockets": "*/15 * * * *",
    "health": "*/5 * * * *",
    "orphaned_media": "0 5 * * 0",
    "job_records": "30 3 * * *",
}


@dataclass(frozen=True)
class CleanupConfig:
    batch_size: int
    time_budget_s: int
    story_ttl_hours: int
    story_purge_after_days: int
    session_inactive_days: int
    temp_file_ttl_hours: int
    message_retention_days: int
    message_policy: str
    prekey_used_grace_days: int
    prekey_low_threshold: int
    orphan_prefixes: list[str]
    orphan_grace_hours: int
    websocket_stale_minutes: int
    job_record_retention_days: int
    cron: dict[str, str]  # cleanup name -> cron expression, or "off"


@dataclass(frozen=True)
class Config:
    production: bool
    secret_key: str
    allowed_hosts: list[str]
    csrf_trusted_origins: list[str]
    secure_ssl_redirect: bool
    shutdown_token: str
    database_url: str
    db_conn_max_age: int
    messenger_db_time_zone: str  # the zone the messenger's TIMESTAMP columns hold local times of
    migration_lock_timeout_ms: int
    migration_lock_retries: int
    redis_url: str
    rabbitmq_url: str
    rabbitmq_exchange: str
    rabbitmq_queue_name: str
    rabbitmq_queue_prefix: str
    worker: bool  # WORKER=false: consume_rabbit takes nothing from RabbitMQ (the LMS worker's switch)
    rabbitmq_adopt_queues: dict[str, str]  # another service's queue -> its domain, during a cut-over
    prefetch_count: int
    heartbeat_interval_ms: int
    max_retries: int
    base_delay_ms: int
    max_delay_ms: int
    job_result_ttl: int
    job_failure_ttl: int
    job_dedup_ttl: int
    max_message_bytes: int
    consumer_flush_ms: int
    log_level: str
    log_dir: Path
    log_json: bool
    media_root: Path
    temp_dir: Path
    cleanup: CleanupConfig
    aws_region: str
    aws_access_key_id: str
    aws_secret_access_key: str
    aws_s3_bucket: str
    aws_s3_endpoint_url: str
    firebase_project_id: str
    firebase_client_email: str
    firebase_private_key: str
    firebase_token_uri: str  # where the service account's JWT is exchanged for an access token
    smtp_host: str
    smtp_port: int
    smtp_user: str
    smtp_password: str
    smtp_security: str
    sender_email: str
    sms_backend: str
    sms_api_url: str
    sms_api_key: str
    sms_api_secret: str
    sms_from_number: str
    # Media processing limits and output sizes (media_jobs/limits.py).
    media_image_max_bytes: int
    media_image_max_pixels: int
    media_image_max_edge: int
    media_thumbnail_max_edge: int
    media_video_max_bytes: int
    media_video_max_seconds: int
    media_video_max_edge: int
    media_video_passthrough_max_bitrate: int
    media_audio_max_bytes: int
    media_audio_max_seconds: int
    # Notifications (notifications/): FCM endpoint and credentials, push TTL, channel rate limits.
    fcm_endpoint: str
    fcm_access_token: str
    fcm_project_id: str
    fcm_timeout_s: int
    fcm_ttl_s: int
    fcm_http_client: str  # curl (libcurl under firebase-admin) or requests (the SDK's own adapter)
    email_rate_per_second: int
    sms_rate_per_second: int
    email_backend: str  # Django dotted path, or "" to choose by SMTP_HOST (supworker/settings.py)
    email_file_path: Path
    anymail: dict[str, str]  # ANYMAIL_<ESP>_<SETTING> variables, prefix stripped: settings.ANYMAIL


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment over the `.env` file: a variable set in both keeps its environment value."""
    environ = dict(os.environ if environ is None else environ)
    env_file = Path(environ.get("SUPWORKER_ENV_FILE") or BASE_DIR / ".env")
    file_values = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.is_file() else {}
    return file_values | environ


def _redis_url(env: EnvReader) -> str:
    url = env.url("REDIS_URL", schemes=("redis", "rediss", "unix"))
    if url:
        return url
    host = env.str("REDIS_HOST", default="127.0.0.1")
    port = env.int("REDIS_PORT", 6390, 1, 65535)
    db = env.int("REDIS_DB", 0, 0, 15)
    password = env.str("REDIS_PASSWORD")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


def _secret_key_from_file(env: EnvReader) -> str:
    """DJANGO_SECRET_KEY_FILE: the key kept in a file, such as a mounted secret or the key the
    compose quick start generates (scripts/secret_key_file.py), so it never sits in the environment."""
    _, name = env.raw("DJANGO_SECRET_KEY_FILE")
    if name is None:
        return ""
    path = Path(name) if Path(name).is_absolute() else BASE_DIR / name
    try:
        return path.read_text().strip()
    except OSError as exc:
        env.fail("DJANGO_SECRET_KEY_FILE", f"cannot be read: {exc.strerror} ({path})")
        return ""


def _path(env: EnvReader, name: str, default: Path) -> Path:
    path = Path(env.str(name, default=str(default)))
    return path if path.is_absolute() else BASE_DIR / path


EMAIL_BACKENDS = {
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
    "console": "django.core.mail.backends.console.EmailBackend",
    "file": "django.core.mail.backends.filebased.EmailBackend",
}


def _email_backend(env: EnvReader) -> str:
    """smtp, console, file, or a django-anymail backend's dotted path; empty: smtp when SMTP_HOST is set."""
    value = env.str("EMAIL_BACKEND")
    if not value or value in EMAIL_BACKENDS:
        return EMAIL_BACKENDS.get(value, "")
    if not value.startswith("anymail.backends.") or not value.endswith(".EmailBackend"):
        env.fail("EMAIL_BACKEND", "must be smtp, console, file or anymail.backends.<provider>.EmailBackend")
        return ""
    return value


def _anymail(env: EnvReader) -> dict[str, str]:
    """django-anymail's settings from ANYMAIL_* variables, e.g. ANYMAIL_SENDGRID_API_KEY → SENDGRID_API_KEY."""
    return {
        name.removeprefix("ANYMAIL_"): value.strip()
        for name, value in sorted(env.environ.items())
        if name.startswith("ANYMAIL_") and len(name) > len("ANYMAIL_") and value.strip()
    }


def _cron(env: EnvReader, name: str, default: str) -> str:
    from croniter import croniter

    variable = f"CRON_{name.upper()}"
    value = env.str(variable, default=default)
    if value != "off" and not croniter.is_valid(value):
        env.fail(variable, f"must be a cron expression such as '{default}', or off; got {value!r}")
        return default
    return value


def _time_zone(env: EnvReader, name: str, default: str) -> str:
    value = env.str(name, default=default)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        env.fail(name, f"must be an IANA time zone such as UTC or Europe/Berlin; got {value!r}")
        return default
    return value


ADOPTABLE_DOMAINS = ("media", "notification", "cleanup")  # those that arrive on the main exchange
# <prefix>.<name>: supworker's own queues (supworker/rabbit/topology.py), never another service's.
OWN_QUEUES = ("media", "notifications", "cleanup", "devices", "dead_letters")


def _adopt_queues(env: EnvReader, own: set[str]) -> dict[str, str]:
    """RABBITMQ_ADOPT_QUEUES: `queue:domain` pairs, queues another service owns (docs/cutover.md)."""
    adopted: dict[str, str] = {}
    for item in env.list("RABBITMQ_ADOPT_QUEUES", []):
        queue, _, domain = item.rpartition(":")  # a queue name may itself hold ':'
        if domain not in ADOPTABLE_DOMAINS or not re.fullmatch(r"[\w.:\-]{1,255}", queue):
            env.fail(
                "RABBITMQ_ADOPT_QUEUES",
                f"must be queue:domain pairs separated by commas, the domain one of {', '.join(ADOPTABLE_DOMAINS)} "
                f"(e.g. worker_media:media); got {item!r}",
            )
        elif queue in adopted:
            env.fail("RABBITMQ_ADOPT_QUEUES", f"names the queue {queue!r} twice")
        elif queue in own:
            env.fail("RABBITMQ_ADOPT_QUEUES", f"names {queue!r}, one of supworker's own queues: list another service's")
        else:
            adopted[queue] = domain
    return adopted


def _shutdown_token(env: EnvReader) -> str:
    token = env.str("SHUTDOWN_TOKEN")
    if token and len(token) < 32:
        env.fail("SHUTDOWN_TOKEN", "must be at least 32 characters (or unset: then only staff may shut down)")
        return ""
    return token


def _cleanup_config(env: EnvReader) -> CleanupConfig:
    return CleanupConfig(
        batch_size=env.int("CLEANUP_BATCH_SIZE", 5000, 1, 100_000),
        time_budget_s=env.int("CLEANUP_TIME_BUDGET_S", 90, 5, 3600),
        story_ttl_hours=env.int("STORY_TTL_HOURS", 24, 1, 24 * 365),
        story_purge_after_days=env.int("STORY_PURGE_AFTER_DAYS", 7, 0, 3650),
        session_inactive_days=env.int("SESSION_INACTIVE_DAYS", 30, 1, 3650),
        temp_file_ttl_hours=env.int("TEMP_FILE_TTL_HOURS", 24, 1, 24 * 365),
        message_retention_days=env.int("MESSAGE_RETENTION_DAYS", 365, 1, 36500),
        message_policy=env.choice(
            "MESSAGE_RETENTION_POLICY",
            choices={"archive": "archive", "delete": "delete", "off": "off"},
            default="archive",
        ),
        prekey_used_grace_days=env.int("PREKEY_USED_GRACE_DAYS", 7, 0, 3650),
        prekey_low_threshold=env.int("PREKEY_LOW_THRESHOLD", 10, 0, 10_000),
        orphan_prefixes=env.list("ORPHAN_MEDIA_PREFIXES", ["media/"]),
        orphan_grace_hours=env.int("ORPHAN_MEDIA_GRACE_HOURS", 24, 1, 24 * 365),
        websocket_stale_minutes=env.int("WEBSOCKET_STALE_MINUTES", 15, 1, 1440),
        job_record_retention_days=env.int("JOB_RECORD_RETENTION_DAYS", 30, 1, 3650),
        cron={name: _cron(env, name, default) for name, default in CRON_DEFAULTS.items()},
    )


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Parse the environment; raise ConfigError naming every variable that is wrong."""
    env = EnvReader(read_environment(environ))
    production = env.choice(
        "SUPWORKER_ENV", "NODE_ENV", choices={"development": False, "production": True}, default=False
    )

    secret_key = env.str("DJANGO_SECRET_KEY", "SECRET_KEY") or _secret_key_from_file(env) or DEV_SECRET_KEY
    if production and (secret_key == DEV_SECRET_KEY or len(secret_key) < 50 or len(set(secret_key)) < 5):
        env.fail("DJANGO_SECRET_KEY", "must be set to a random value of at least 50 characters in production")
    allowed_hosts = env.list("ALLOWED_HOSTS", [] if production else ["127.0.0.1", "localhost", "[::1]"])
    if production and not allowed_hosts:
        env.fail("ALLOWED_HOSTS", "must list the host names the web process answers to in production")

    base_delay_ms = env.int("BASE_DELAY_MS", 5000, 1, 3_600_000)
    max_delay_ms = env.int("MAX_DELAY_MS", 30000, 1, 86_400_000)
    if base_delay_ms > max_delay_ms:
        env.fail("MAX_DELAY_MS", f"must not be smaller than BASE_DELAY_MS ({max_delay_ms} < {base_delay_ms})")

    env.together("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
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

    otp_queue = env.name("RABBITMQ_QUEUE_NAME", "service_send_otp")
    queue_prefix = env.name("RABBITMQ_QUEUE_PREFIX", "supworker")
    config = Config(
        production=production,
        secret_key=secret_key,
        allowed_hosts=allowed_hosts,
        csrf_trusted_origins=env.list("CSRF_TRUSTED_ORIGINS", []),
        secure_ssl_redirect=env.bool("SECURE_SSL_REDIRECT", production),
        shutdown_token=_shutdown_token(env),
        database_url=env.url(
            "DATABASE_URL",
            schemes=("postgres", "postgresql"),
            default="postgres://supworker:supworker@127.0.0.1:5440/supworker",
        ),
        db_conn_max_age=env.int("DB_CONN_MAX_AGE", 60, 0, 86400),
        messenger_db_time_zone=_time_zone(env, "MESSENGER_DB_TIME_ZONE", "UTC"),
        migration_lock_timeout_ms=env.int("MIGRATION_LOCK_TIMEOUT_MS", 2000, 10, 600_000),
        migration_lock_retries=env.int("MIGRATION_LOCK_RETRIES", 30, 0, 1000),
        redis_url=_redis_url(env),
        rabbitmq_url=env.url(
            "RABBITMQ_URL", schemes=("amqp", "amqps"), default="amqp://guest:guest@127.0.0.1:5690/%2F"
        ),
        rabbitmq_exchange=env.name("RABBITMQ_EXCHANGE", "sup_exchange"),
        rabbitmq_queue_name=otp_queue,
        rabbitmq_queue_prefix=queue_prefix,
        rabbitmq_adopt_queues=_adopt_queues(env, own={otp_queue, *(f"{queue_prefix}.{d}" for d in OWN_QUEUES)}),
        worker=env.bool("WORKER", True),
        prefetch_count=env.int("PREFETCH_COUNT", 500, 1, 65535),
        heartbeat_interval_ms=env.int("HEARTBEAT_INTERVAL_MS", 30000, 1000, 3_600_000),
        max_retries=env.int("MAX_RETRIES", 3, 0, 25),
        base_delay_ms=base_delay_ms,
        max_delay_ms=max_delay_ms,
        job_result_ttl=env.int("JOB_RESULT_TTL", 3600, 0, 30 * 86400),
        job_failure_ttl=env.int("JOB_FAILURE_TTL", 7 * 86400, 60, 90 * 86400),
        job_dedup_ttl=env.int("JOB_DEDUP_TTL", 7 * 86400, 60, 90 * 86400),
        max_message_bytes=env.int("MAX_MESSAGE_BYTES", 256 * 1024, 1024, 64 * 1024 * 1024),
        consumer_flush_ms=env.int("CONSUMER_FLUSH_MS", 20, 1, 5000),
        log_level=env.choice("LOG_LEVEL", choices=LOG_LEVELS, default="INFO"),
        log_dir=_path(env, "LOG_DIR", BASE_DIR / "logs"),
        log_json=env.bool("LOG_JSON", production),
        media_root=_path(env, "MEDIA_ROOT", BASE_DIR / "var" / "media"),
        temp_dir=_path(env, "TEMP_DIR", BASE_DIR / "var" / "tmp"),
        cleanup=_cleanup_config(env),
        aws_region=env.str("AWS_REGION", default="us-east-1"),
        aws_access_key_id=env.str("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.str("AWS_SECRET_ACCESS_KEY"),
        aws_s3_bucket=env.str("AWS_S3_BUCKET"),
        aws_s3_endpoint_url=env.url("AWS_S3_ENDPOINT_URL", schemes=("http", "https")),
        firebase_project_id=env.str("FIREBASE_PROJECT_ID"),
        firebase_client_email=env.email("FIREBASE_CLIENT_EMAIL"),
        firebase_private_key=private_key,
        firebase_token_uri=env.url("FIREBASE_TOKEN_URI", schemes=("http", "https"), default=GOOGLE_TOKEN_URI),
        smtp_host=env.str("SMTP_HOST"),
        smtp_port=smtp_port,
        smtp_user=env.str("SMTP_USER"),
        smtp_password=env.str("SMTP_PASSWORD", "SMTP_PASS"),
        smtp_security=smtp_security,
        sender_email=env.email("SENDER_EMAIL", default="SUP Messenger <no-reply@supworker.local>"),
        sms_backend=sms_backend,
        sms_api_url=env.url("SMS_API_URL", schemes=("http", "https"), default="https://rest.nexmo.com"),
        sms_api_key=env.str("SMS_API_KEY"),
        sms_api_secret=env.str("SMS_API_SECRET"),
        sms_from_number=env.phone("SMS_FROM_NUMBER"),
        media_image_max_bytes=env.int("MEDIA_IMAGE_MAX_BYTES", 16 * 1024 * 1024, 1024, 1024**3),
        media_image_max_pixels=env.int("MEDIA_IMAGE_MAX_PIXELS", 33_177_600, 1, 500_000_000),
        media_image_max_edge=env.int("MEDIA_IMAGE_MAX_EDGE", 2048, 16, 16384),
        media_thumbnail_max_edge=env.int("MEDIA_THUMBNAIL_MAX_EDGE", 320, 16, 4096),
        media_video_max_bytes=env.int("MEDIA_VIDEO_MAX_BYTES", 100 * 1024 * 1024, 1024, 16 * 1024**3),
        media_video_max_seconds=env.int("MEDIA_VIDEO_MAX_SECONDS", 300, 1, 86400),
        media_video_max_edge=env.int("MEDIA_VIDEO_MAX_EDGE", 1280, 16, 4096),
        media_video_passthrough_max_bitrate=env.int("MEDIA_VIDEO_PASSTHROUGH_MAX_BITRATE", 5_000_000, 0, 1_000_000_000),
        media_audio_max_bytes=env.int("MEDIA_AUDIO_MAX_BYTES", 50 * 1024 * 1024, 1024, 16 * 1024**3),
        media_audio_max_seconds=env.int("MEDIA_AUDIO_MAX_SECONDS", 900, 1, 86400),
        fcm_endpoint=env.url("FCM_ENDPOINT", schemes=("http", "https"), default="https://fcm.googleapis.com"),
        fcm_access_token=env.str("FCM_ACCESS_TOKEN"),
        fcm_project_id=env.str("FCM_PROJECT_ID"),
        fcm_timeout_s=env.int("FCM_TIMEOUT_SECONDS", 10, 1, 120),
        fcm_ttl_s=env.int("FCM_TTL_SECONDS", 86400, 0, 28 * 86400),
        fcm_http_client=env.choice("FCM_HTTP_CLIENT", choices={"curl": "curl", "requests": "requests"}, default="curl"),
        email_rate_per_second=env.int("EMAIL_RATE_PER_SECOND", 50, 0, 100_000),
        sms_rate_per_second=env.int("SMS_RATE_PER_SECOND", 10, 0, 100_000),
        email_backend=_email_backend(env),
        email_file_path=_path(env, "EMAIL_FILE_PATH", BASE_DIR / "var" / "mail"),
        anymail=_anymail(env),
    )
    if env.problems:
        raise ConfigError(env.problems)
    return config

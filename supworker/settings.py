"""Django settings. Everything that varies between machines comes from supworker.config."""

from __future__ import annotations

import dj_database_url

from supworker.config import BASE_DIR, Config, load_config
from supworker.logging_config import build_logging

# The apps that declare job types (jobtypes.py) and read a section of the settings (config.py).
DOMAIN_APPS = ["media_jobs", "notifications", "cleanup", "monitoring", "privacy"]
CONFIG = load_config(apps=DOMAIN_APPS)

PRODUCTION = CONFIG.production
DEBUG = False  # Never on: the admin is reachable, and DEBUG leaks settings and SQL.
SECRET_KEY = CONFIG.secret_key
ALLOWED_HOSTS = CONFIG.allowed_hosts
CSRF_TRUSTED_ORIGINS = CONFIG.csrf_trusted_origins

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Before notifications, whose admin replaces the one fcm_django registers for the device model.
    "fcm_django",
    # Ours before django_rq: cleanup's rqscheduler command (which registers the cron table)
    # takes precedence over django-rq's.
    "supworker",
    *DOMAIN_APPS,
    "django_rq",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "supworker.urls"
WSGI_APPLICATION = "supworker.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(CONFIG.database_url, conn_max_age=CONFIG.db_conn_max_age, conn_health_checks=True)
}
# The messenger's tables use TIMESTAMP without time zone, which the Node API fills in its
# session's zone. Running our sessions in the same zone makes PostgreSQL's own conversions
# (NOW() defaults, comparisons with timestamptz values) agree with the API's; reads are made
# aware in that zone by supworker.models.messenger.MessengerTimestamp.
DATABASES["default"]["TIME_ZONE"] = CONFIG.messenger_db_time_zone
# Set once per connection, by `SET TIME ZONE`: PgBouncer in transaction mode tracks TimeZone per
# client and sets it again on every server session it lends (docs/operations.md).
# No server-side cursors (what QuerySet.iterator() uses on PostgreSQL): behind PgBouncer in
# transaction mode the cursor stays in one server session while the next FETCH may run in
# another. Always off, rather than a setting an operator must remember: supworker walks big
# tables in keyset batches and never iterates a queryset, so a direct connection loses nothing.
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise expects it, even when serving from finders
MEDIA_ROOT = CONFIG.media_root
MEDIA_URL = "/media/"
# Admin assets are served by WhiteNoise from the installed apps, so no collectstatic step is needed.
WHITENOISE_USE_FINDERS = True


def media_storage(config: Config) -> dict:
    """Django's STORAGES["default"]: files under MEDIA_ROOT, or S3 (django-storages) when AWS_S3_BUCKET is set."""
    if not config.aws_s3_bucket:
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": config.aws_s3_bucket,
            "region_name": config.aws_region,
            "endpoint_url": config.aws_s3_endpoint_url or None,
            # None: boto3's own credential chain (an instance or task role, ~/.aws/credentials).
            "access_key": config.aws_access_key_id or None,
            "secret_key": config.aws_secret_access_key or None,
            "file_overwrite": True,  # outputs use deterministic keys: a rerun replaces, never duplicates
            "default_acl": None,
            # Presigned URLs (an export's download link) signed with SigV4: AWS refuses SigV2 on
            # buckets made since 2020, and botocore would presign with it in us-east-1.
            "signature_version": "s3v4",
        },
    }


STORAGES = {
    "default": media_storage(CONFIG),
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- RQ -------------------------------------------------------------------------------------
# Per-queue defaults; the per-job-type policy (priority, timeout, retries) is in supworker.queues.
from supworker.queues import rq_queues_setting  # noqa: E402 - needs CONFIG above

RQ_QUEUES = rq_queues_setting(CONFIG.redis_url, CONFIG.redis_sentinel)
RQ = {
    "DEFAULT_RESULT_TTL": CONFIG.job_result_ttl,
    "WORKER_CLASS": "supworker.worker.Worker",
    "SCHEDULER_CLASS": "supworker.scheduler.Scheduler",
}
RQ_SHOW_ADMIN_LINK = True

# --- fcm-django: devices belong to messenger users, who live in the messenger's database ---
# Its device model swapped for ours (table fcm_devices, created by notifications' migrations).
FCM_DJANGO_FCMDEVICE_MODEL = "notifications.Device"
# fcm_django's own migrations would create a second, unused table for the model we swap out
# (they predate its swappable setting): the app runs without migrations, which makes no table.
MIGRATION_MODULES = {"fcm_django": None}
# Inactive rows stay: an unregistered token's row keeps the time of that change, so an older
# registration arriving late cannot revive it (notifications/devices.py).
FCM_DJANGO_SETTINGS = {"ONE_DEVICE_PER_USER": False, "DELETE_INACTIVE_DEVICES": False}

# --- e-mail ---------------------------------------------------------------------------------
NOTIFY = CONFIG.notifications
DEFAULT_FROM_EMAIL = NOTIFY.sender_email
SERVER_EMAIL = NOTIFY.sender_email
if NOTIFY.smtp_host:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = NOTIFY.smtp_host
    EMAIL_PORT = NOTIFY.smtp_port
    EMAIL_HOST_USER = NOTIFY.smtp_user
    EMAIL_HOST_PASSWORD = NOTIFY.smtp_password
    EMAIL_USE_TLS = NOTIFY.smtp_security == "starttls"
    EMAIL_USE_SSL = NOTIFY.smtp_security == "ssl"
    EMAIL_TIMEOUT = 20
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
if NOTIFY.email_backend:  # EMAIL_BACKEND=smtp|console|file|anymail.backends.<esp>.EmailBackend
    EMAIL_BACKEND = NOTIFY.email_backend
    EMAIL_FILE_PATH = str(NOTIFY.email_file_path)
ANYMAIL = NOTIFY.anymail  # the provider's key, API URL, webhook secret ...: ANYMAIL_* in the environment

# --- security -------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if PRODUCTION:
    # TLS is terminated by the load balancer in front of the web process.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = CONFIG.secure_ssl_redirect
    # Probes and scrapers talk plain HTTP to the pod; do not redirect them.
    SECURE_REDIRECT_EXEMPT = [r"^health", r"^metrics"]
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

LOGGING = build_logging(CONFIG)

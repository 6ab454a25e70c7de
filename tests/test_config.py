"""Settings come from the environment (and `.env`); every bad value is named at start-up."""

from __future__ import annotations

import re
import secrets

import pytest

from supworker import jobtypes
from supworker.config import load_config
from supworker.env import ConfigError
from tests.helpers import run_manage
from tests.testenv import ROOT

NO_ENV_FILE = {"SUPWORKER_ENV_FILE": "/nonexistent/.env"}
PRODUCTION = {
    "SUPWORKER_ENV": "production",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
    "ALLOWED_HOSTS": "worker.example.com",
    "SMTP_HOST": "smtp.example.com",
}


def load(**environ: str):
    return load_config(NO_ENV_FILE | environ)


def test_defaults_point_at_the_project_local_services():
    config = load()
    assert config.redis_url == "redis://127.0.0.1:6390/0"
    assert config.rabbitmq_url.startswith("amqp://guest:guest@127.0.0.1:5690/")
    assert config.database_url.endswith("@127.0.0.1:5440/supworker")
    assert (config.rabbitmq_exchange, config.rabbitmq_queue_name) == ("sup_exchange", "service_send_otp")
    assert (config.max_retries, config.base_delay_ms) == (3, 5000)
    assert not config.production
    assert config.worker, "consume_rabbit consumes unless WORKER=false"


def test_operators_variable_names_are_accepted():
    config = load(
        REDIS_HOST="cache.internal",
        REDIS_PORT="6380",
        REDIS_PASSWORD="p@ss/word",
        SMTP_HOST="smtp.example.com",
        SMTP_PORT="465",
        SMTP_PASS="legacy-name",
        SENDER_EMAIL="SUP <noreply@example.com>",
        FIREBASE_PROJECT_ID="sup",
        FIREBASE_CLIENT_EMAIL="fcm@sup.iam.gserviceaccount.com",
        FIREBASE_PRIVATE_KEY="-----BEGIN PRIVATE KEY-----\\nabc\\n-----END PRIVATE KEY-----\\n",
        NODE_ENV="development",
        LOG_LEVEL="warn",
        WORKER="false",
    )
    assert config.redis_url == "redis://:p%40ss%2Fword@cache.internal:6380/0"
    assert config.notifications.smtp_password == "legacy-name"
    assert config.notifications.smtp_security == "ssl"  # implied by port 465
    assert config.notifications.firebase_private_key.count("\n") == 3  # escaped newlines restored
    assert config.log_level == "WARNING"
    assert config.worker is False


def test_redis_url_wins_over_host_and_port():
    assert load(REDIS_URL="redis://r.internal:7000/2", REDIS_PORT="1").redis_url == "redis://r.internal:7000/2"


def test_adopted_queues_are_queue_domain_pairs_and_a_queue_name_may_hold_colons():
    config = load(RABBITMQ_ADOPT_QUEUES="worker.media:media, api:notifications:notification")
    assert config.rabbitmq_adopt_queues == {"worker.media": "media", "api:notifications": "notification"}
    assert load().rabbitmq_adopt_queues == {}


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"REDIS_PORT": "abc"}, "REDIS_PORT must be a whole number"),
        ({"REDIS_PORT": "70000"}, "REDIS_PORT must be between 1 and 65535"),
        ({"REDIS_URL": "http://cache"}, "REDIS_URL must be a redis/rediss/unix URL"),
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL must be a postgres/postgresql URL"),
        ({"DATABASE_URL": "postgres://db:port/x"}, "DATABASE_URL is not a valid URL"),
        ({"RABBITMQ_URL": "localhost:5672"}, "RABBITMQ_URL must be a amqp/amqps URL"),
        ({"RABBITMQ_EXCHANGE": "sup exchange"}, "RABBITMQ_EXCHANGE must be 1-255 characters"),
        ({"RABBITMQ_ADOPT_QUEUES": "worker_media"}, "RABBITMQ_ADOPT_QUEUES must be queue:domain pairs"),
        ({"RABBITMQ_ADOPT_QUEUES": "worker_media:video"}, "the domain one of media, notification, cleanup"),
        ({"RABBITMQ_ADOPT_QUEUES": "q:media,q:cleanup"}, "RABBITMQ_ADOPT_QUEUES names the queue 'q' twice"),
        ({"RABBITMQ_ADOPT_QUEUES": "supworker.media:media"}, "names 'supworker.media', one of supworker's own"),
        ({"MAX_RETRIES": "-1"}, "MAX_RETRIES must be between 0 and 25"),
        ({"PREFETCH_COUNT": "0"}, "PREFETCH_COUNT must be between 1 and 65535"),
        ({"HEARTBEAT_INTERVAL_MS": "10"}, "HEARTBEAT_INTERVAL_MS must be between 1000"),
        ({"BASE_DELAY_MS": "9000", "MAX_DELAY_MS": "1000"}, "MAX_DELAY_MS must not be smaller than BASE_DELAY_MS"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"),
        ({"SUPWORKER_ENV": "staging"}, "SUPWORKER_ENV must be one of development, production"),
        ({"SMTP_PORT": "smtp"}, "SMTP_PORT must be a whole number"),
        ({"SMTP_SECURITY": "tls13"}, "SMTP_SECURITY must be one of"),
        ({"SENDER_EMAIL": "not-an-address"}, "SENDER_EMAIL must be an e-mail address"),
        ({"AWS_ACCESS_KEY_ID": "AKIA123"}, "AWS_SECRET_ACCESS_KEY must be set together with AWS_ACCESS_KEY_ID"),
        ({"AWS_S3_ENDPOINT_URL": "minio:9000"}, "AWS_S3_ENDPOINT_URL must be a http/https URL"),
        ({"FIREBASE_PROJECT_ID": "sup"}, "FIREBASE_CLIENT_EMAIL must be set together with FIREBASE_PROJECT_ID"),
        ({"SMS_BACKEND": "vonage"}, "SMS_API_KEY is required but not set"),
        ({"SMS_FROM_NUMBER": "0612345678"}, "SMS_FROM_NUMBER must be an E.164 phone number"),
        ({"SECURE_SSL_REDIRECT": "maybe"}, "SECURE_SSL_REDIRECT must be true or false"),
        ({"WORKER": "maybe"}, "WORKER must be true or false"),
        ({"CRON_SESSIONS": "every day"}, "CRON_SESSIONS must be a cron expression such as '0 0 * * *', or off"),
        ({"MESSAGE_RETENTION_POLICY": "shred"}, "MESSAGE_RETENTION_POLICY must be one of archive, delete, off"),
        ({"SUPWORKER_ENV": "production"}, "DJANGO_SECRET_KEY must be set to a random value"),
        (PRODUCTION | {"DJANGO_SECRET_KEY": "short"}, "DJANGO_SECRET_KEY must be set to a random value"),
        (PRODUCTION | {"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS must list the host names"),
        ({"DJANGO_SECRET_KEY_FILE": "/nonexistent/key"}, "DJANGO_SECRET_KEY_FILE cannot be read"),
    ],
)
def test_each_bad_value_is_rejected_with_its_variable_named(environ, named):
    with pytest.raises(ConfigError) as excinfo:
        load(**environ)
    assert named in str(excinfo.value)


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as excinfo:
        load(REDIS_PORT="x", MAX_RETRIES="many", LOG_LEVEL="loud")
    assert sorted(p.split()[0] for p in excinfo.value.problems) == ["LOG_LEVEL", "MAX_RETRIES", "REDIS_PORT"]


def test_problems_in_every_app_section_are_reported_with_the_core_s():
    with pytest.raises(ConfigError) as excinfo:
        load(
            MAX_RETRIES="many",
            MEDIA_IMAGE_MAX_EDGE="big",
            SMTP_PORT="0",
            CLEANUP_BATCH_SIZE="-1",
            CRON_STORIES="hourly",
        )
    named = sorted(p.split()[0] for p in excinfo.value.problems)
    assert named == ["CLEANUP_BATCH_SIZE", "CRON_STORIES", "MAX_RETRIES", "MEDIA_IMAGE_MAX_EDGE", "SMTP_PORT"]


def test_each_app_reads_its_own_section():
    config = load(MEDIA_IMAGE_MAX_EDGE="1024", SMS_RATE_PER_SECOND="3", STORY_TTL_HOURS="12", CRON_HEALTH="off")
    assert config.media.image_max_edge == 1024
    assert config.notifications.sms_rate_per_second == 3
    assert config.cleanup.story_ttl_hours == 12
    assert config.cron["health"] == "off" and config.cron["stories"] == "0 * * * *"


def test_env_file_is_read_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("RABBITMQ_EXCHANGE=from_file\nRABBITMQ_QUEUE_NAME=otp_from_file\n# a comment\n")
    config = load_config({"SUPWORKER_ENV_FILE": str(env_file), "RABBITMQ_QUEUE_NAME": "otp_from_env"})
    assert config.rabbitmq_exchange == "from_file"
    assert config.rabbitmq_queue_name == "otp_from_env"


def test_the_secret_key_may_come_from_a_file_and_the_variable_wins(tmp_path):
    key_file = tmp_path / "secret_key"
    key_file.write_text(PRODUCTION["DJANGO_SECRET_KEY"] + "\n")
    from_file = PRODUCTION | {"DJANGO_SECRET_KEY": "", "DJANGO_SECRET_KEY_FILE": str(key_file)}
    assert load(**from_file).secret_key == PRODUCTION["DJANGO_SECRET_KEY"]
    in_variable = secrets.token_urlsafe(60)
    assert load(**from_file | {"DJANGO_SECRET_KEY": in_variable}).secret_key == in_variable
    key_file.write_text("")
    with pytest.raises(ConfigError, match="DJANGO_SECRET_KEY must be set"):
        load(**from_file)


def test_a_bad_setting_stops_start_up_with_one_line_and_no_traceback():
    result = run_manage("check", env={"REDIS_URL": "", "REDIS_PORT": "abc", "MAX_DELAY_MS": "-5"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "supworker: configuration error: MAX_DELAY_MS must be between 1 and 86400000, got -5; "
        "REDIS_PORT must be a whole number, got 'abc'"
    ]


def test_production_settings_pass_check_deploy():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_without_a_way_to_send_e_mail_is_warned_about_by_every_command():
    """The LMS worker required SMTP_HOST; here its absence prints OTPs instead of sending them."""
    without_smtp = {name: value for name, value in PRODUCTION.items() if name != "SMTP_HOST"}
    result = run_manage("check", "--fail-level", "WARNING", env=without_smtp)
    assert result.returncode != 0
    assert "notifications.W001" in result.stderr and "SMTP_HOST" in result.stderr


def test_env_example_documents_every_setting_with_its_default():
    readers = [ROOT / "supworker" / "config.py", ROOT / "supworker" / "env.py", *ROOT.glob("*/config.py")]
    source = "".join(path.read_text() for path in readers)
    read = set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', source)) - {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    read |= {f"CRON_{job_type.short_name.upper()}" for job_type in jobtypes.scheduled()}  # from the cron table
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    mentioned = set(re.findall(r"\b([A-Z][A-Z0-9_]{2,})\b", example))
    assert read - mentioned == set(), "settings missing from .env.example"
    assert documented - read - {"WEB_PORT"} == set(), ".env.example lists settings nothing reads"
    # Copying the example to .env changes nothing: its values are the defaults.
    assert load_config({"SUPWORKER_ENV_FILE": str(ROOT / ".env.example")}) == load()

"""Every setting supworker reads from its environment, parsed and checked at start-up.

The core's own settings are read here; each domain app reads its section in its own
`config.py` (`SECTION = "media"`, `read(env)`), and the whole is `settings.CONFIG`, with
`settings.CONFIG.media`, `settings.CONFIG.notifications` ... for the sections. Every problem
in every section is reported at once, each variable named.

The variable names are the ones operators of the Node worker and the LMS OTP worker already
use, so an existing `.env` keeps working. Defaults point at the project-local services that
`make services` starts, so a fresh clone runs with no `.env` at all.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from dotenv import dotenv_values

from supworker import jobtypes
from supworker.env import ConfigError, EnvReader

BASE_DIR = Path(__file__).resolve().parent.parent

DEV_SECRET_KEY = "dev-only-insecure-key-never-use-in-production"  # noqa: S105 - development default
LOG_LEVELS = {name.lower(): name for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")} | {"warn": "WARNING"}
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5690/%2F"


@dataclass(frozen=True)
class RedisSentinel:
    """REDIS_SENTINELS set: Redis is reached through these sentinels, which name its primary."""

    sentinels: list[tuple[str, int]]
    master: str  # the monitored primary's name (REDIS_SENTINEL_MASTER)
    sentinel_password: str  # the sentinels' own password
    password: str  # the data nodes' password (REDIS_PASSWORD)
    db: int


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
    redis_sentinel: RedisSentinel | None  # when set, it wins over redis_url
    redis_wait_replicas: int  # replicas that must have a batch's jobs before RabbitMQ is acked (0: off)
    redis_wait_timeout_ms: int
    rabbitmq_url: str  # one node's URL, or several nodes' separated by commas: rabbitmq_urls
    rabbitmq_queue_type: str  # "classic" or "quorum": how supworker declares its own queues
    rabbitmq_delivery_limit: int  # quorum queues: deliveries before RabbitMQ dead-letters a message
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
    dead_letter_handled_retention_days: int  # a requeued dead letter is removed this long after
    dead_letter_retention_days: int  # any dead letter is removed this long after it failed
    max_message_bytes: int
    consumer_flush_ms: int
    consumer_max_linger_ms: int  # a batch bound for busy workers fills up to this long
    log_level: str
    log_dir: Path
    log_json: bool
    media_root: Path
    temp_dir: Path
    cron: dict[str, str]  # a scheduled job type's short name -> cron expression, or "off"
    aws_region: str
    aws_access_key_id: str
    aws_secret_access_key: str
    aws_s3_bucket: str
    aws_s3_endpoint_url: str
    sections: dict[str, Any]  # each domain app's section, by its SECTION name

    def __getattr__(self, name: str) -> Any:
        """A domain app's section: `settings.CONFIG.media`."""
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"no setting or section {name!r} (sections: {', '.join(sections) or 'none read'})")

    def with_section(self, name: str, **changes: Any) -> Config:
        """A copy with some settings of one section changed (tests, `manage.py` tools)."""
        return dataclasses.replace(
            self, sections=self.sections | {name: dataclasses.replace(self.sections[name], **changes)}
        )

    @property
    def rabbitmq_urls(self) -> list[str]:
        """The RabbitMQ nodes to connect to, in the order RABBITMQ_URL lists them."""
        return [url.strip() for url in self.rabbitmq_url.split(",") if url.strip()]

    def secrets(self) -> set[str]:
        """Values never to be written to a log: the core's and those each section names."""
        values = {self.secret_key, self.aws_secret_access_key, self.shutdown_token}
        for section in self.sections.values():
            values.update(getattr(section, "secrets", set)())
        return {value for value in values if value}


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


def _redis_sentinel(env: EnvReader) -> RedisSentinel | None:
    """REDIS_SENTINELS: `host:port` items separated by commas; unset, Redis is reached directly."""
    sentinels = []
    for item in env.list("REDIS_SENTINELS", []):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            env.fail("REDIS_SENTINELS", f"must be host:port items separated by commas (port 1-65535); got {item!r}")
        else:
            sentinels.append((host.strip("[]"), int(port)))  # [::1]:26379 names an IPv6 host
    master = env.name("REDIS_SENTINEL_MASTER", "mymaster")
    sentinel_password = env.str("REDIS_SENTINEL_PASSWORD")
    if not sentinels:
        return None
    return RedisSentinel(
        sentinels=sentinels,
        master=master,
        sentinel_password=sentinel_password,
        password=env.str("REDIS_PASSWORD"),
        db=env.int("REDIS_DB", 0, 0, 15),
    )


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


def env_path(env: EnvReader, name: str, default: Path) -> Path:
    """A path setting; a relative one is taken from the project's directory."""
    path = Path(env.str(name, default=str(default)))
    return path if path.is_absolute() else BASE_DIR / path


def _cron(env: EnvReader, name: str, default: str) -> str:
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


def _adopt_queues(env: EnvReader, own: set[str]) -> dict[str, str]:
    """RABBITMQ_ADOPT_QUEUES: `queue:domain` pairs, queues another service owns (docs/cutover.md)."""
    adoptable = [domain.name for domain in jobtypes.domains().values() if domain.adoptable]
    adopted: dict[str, str] = {}
    for item in env.list("RABBITMQ_ADOPT_QUEUES", []):
        queue, _, domain = item.rpartition(":")  # a queue name may itself hold ':'
        if domain not in adoptable or not re.fullmatch(r"[\w.:\-]{1,255}", queue):
            env.fail(
                "RABBITMQ_ADOPT_QUEUES",
                f"must be queue:domain pairs separated by commas, the domain one of {', '.join(adoptable)} "
                f"(e.g. worker_media:media); got {item!r}",
            )
        elif queue in adopted:
            env.fail("RABBITMQ_ADOPT_QUEUES", f"names the queue {queue!r} twice")
        elif queue in own:
            env.fail("RABBITMQ_ADOPT_QUEUES", f"names {queue!r}, one of supworker's own queues: list another service's")
        else:
            adopted[queue] = domain
    return adopted


def _rabbitmq_url(env: EnvReader) -> str:
    """RABBITMQ_URL: one node's amqp(s) URL, or the nodes of a cluster separated by commas."""
    raw = env.str("RABBITMQ_URL", default=DEFAULT_RABBITMQ_URL)
    nodes = [url.strip() for url in raw.split(",") if url.strip()]
    if not all([env.valid_url("RABBITMQ_URL", url, ("amqp", "amqps")) for url in nodes]):  # each named
        return DEFAULT_RABBITMQ_URL
    return ",".join(nodes)


def _shutdown_token(env: EnvReader) -> str:
    token = env.str("SHUTDOWN_TOKEN")
    if token and len(token) < 32:
        env.fail("SHUTDOWN_TOKEN", "must be at least 32 characters (or unset: then only staff may shut down)")
        return ""
    return token


def _own_queues(queue_prefix: str, otp_queue: str) -> set[str]:
    """supworker's own RabbitMQ queues (supworker/rabbit/topology.py), never another service's."""
    named = [d.rabbit_queue for d in jobtypes.domains().values() if d.rabbit_queue is not None]
    return {otp_queue, *(f"{queue_prefix}.{name}" for name in [*named, "dead_letters"])}


def _sections(env: EnvReader, apps: Iterable[str]) -> dict[str, Any]:
    """Each app's section of the settings, read by the app's own `config.py`."""
    sections = {}
    for app in apps:
        if find_spec(f"{app}.config") is not None:
            module = import_module(f"{app}.config")
            sections[module.SECTION] = module.read(env)
    return sections


def load_config(environ: Mapping[str, str] | None = None, apps: Iterable[str] | None = None) -> Config:
    """Parse the environment; raise ConfigError naming every variable that is wrong.

    `apps` are the domain apps whose job types and settings sections are read: those of
    settings.DOMAIN_APPS unless given (the settings module gives them, being read itself).
    """
    if apps is None:
        from django.conf import settings

        apps = settings.DOMAIN_APPS
    jobtypes.discover(apps)
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
        redis_sentinel=_redis_sentinel(env),
        redis_wait_replicas=env.int("REDIS_WAIT_REPLICAS", 0, 0, 100),
        redis_wait_timeout_ms=env.int("REDIS_WAIT_TIMEOUT_MS", 1000, 1, 600_000),
        rabbitmq_url=_rabbitmq_url(env),
        rabbitmq_queue_type=env.choice(
            "RABBITMQ_QUEUE_TYPE", choices={"classic": "classic", "quorum": "quorum"}, default="classic"
        ),
        rabbitmq_delivery_limit=env.int("RABBITMQ_DELIVERY_LIMIT", 20, 1, 1000),
        rabbitmq_exchange=env.name("RABBITMQ_EXCHANGE", "sup_exchange"),
        rabbitmq_queue_name=otp_queue,
        rabbitmq_queue_prefix=queue_prefix,
        rabbitmq_adopt_queues=_adopt_queues(env, own=_own_queues(queue_prefix, otp_queue)),
        worker=env.bool("WORKER", True),
        prefetch_count=env.int("PREFETCH_COUNT", 500, 1, 65535),
        heartbeat_interval_ms=env.int("HEARTBEAT_INTERVAL_MS", 30000, 1000, 3_600_000),
        max_retries=env.int("MAX_RETRIES", 3, 0, 25),
        base_delay_ms=base_delay_ms,
        max_delay_ms=max_delay_ms,
        job_result_ttl=env.int("JOB_RESULT_TTL", 3600, 0, 30 * 86400),
        job_failure_ttl=env.int("JOB_FAILURE_TTL", 7 * 86400, 60, 90 * 86400),
        job_dedup_ttl=env.int("JOB_DEDUP_TTL", 7 * 86400, 60, 90 * 86400),
        dead_letter_handled_retention_days=env.int("DEAD_LETTER_HANDLED_RETENTION_DAYS", 30, 1, 3650),
        dead_letter_retention_days=env.int("DEAD_LETTER_RETENTION_DAYS", 90, 1, 3650),
        max_message_bytes=env.int("MAX_MESSAGE_BYTES", 256 * 1024, 1024, 64 * 1024 * 1024),
        consumer_flush_ms=env.int("CONSUMER_FLUSH_MS", 20, 1, 5000),
        consumer_max_linger_ms=env.int("CONSUMER_MAX_LINGER_MS", 200, 0, 5000),
        log_level=env.choice("LOG_LEVEL", choices=LOG_LEVELS, default="INFO"),
        log_dir=env_path(env, "LOG_DIR", BASE_DIR / "logs"),
        log_json=env.bool("LOG_JSON", production),
        media_root=env_path(env, "MEDIA_ROOT", BASE_DIR / "var/media"),
        temp_dir=env_path(env, "TEMP_DIR", BASE_DIR / "var" / "tmp"),
        cron={t.short_name: _cron(env, t.short_name, t.cron or "off") for t in jobtypes.scheduled()},
        aws_region=env.str("AWS_REGION", default="us-east-1"),
        aws_access_key_id=env.str("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.str("AWS_SECRET_ACCESS_KEY"),
        aws_s3_bucket=env.str("AWS_S3_BUCKET"),
        aws_s3_endpoint_url=env.url("AWS_S3_ENDPOINT_URL", schemes=("http", "https")),
        sections=_sections(env, apps),
    )
    if env.problems:
        raise ConfigError(env.problems)
    return config

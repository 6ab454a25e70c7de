"""Logging: logs/combined.log, logs/error.log and the console.

Development gets coloured text on the console; production gets one JSON object a line
everywhere, for the log shipper. Every record written while an RQ job runs carries the job's
id, queue and type, so one grep follows a job through all processes.

Whatever a record says, and whoever wrote it (our code, RQ, a library's exception), is redacted
before it is written: the configured credentials become ***, values of secret-named fields
("otp": …, 'fcmToken': …) are hidden, e-mail addresses and phone numbers masked.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from supworker.masking import HIDDEN, mask_text

if TYPE_CHECKING:
    from supworker.config import Config

_COLOURS = {"DEBUG": "\033[36m", "INFO": "\033[32m", "WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[41m"}
_RESET = "\033[0m"
_JOB_FIELDS = ("job_id", "queue", "job_type")


class JobContextFilter(logging.Filter):
    """Adds job_id, queue and job_type of the RQ job running in this process, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        # RQ passes job_id and queue itself (`extra`) when a job raises, but not job_type.
        if not all(hasattr(record, name) for name in _JOB_FIELDS):
            from rq import get_current_job

            job = get_current_job()
            found = {
                "job_id": job.id if job else "",
                "queue": job.origin if job else "",
                "job_type": (job.meta.get("type") or job.func_name) if job else "",
            }
            for name, value in found.items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


class Redactor:
    """Hides the configured credentials, and what supworker.masking hides, in a piece of log text."""

    MIN_LENGTH = 10  # shorter values ("guest", the development database's "supworker") are no secret

    def __init__(self, config: Config | None = None):
        values: set[str] = set()
        if config is not None:
            values.update(config.secrets())
            for url in (config.redis_url, *config.rabbitmq_urls, config.database_url):
                password = urlsplit(url).password or ""
                values.update((password, unquote(password)))
        # Longest first, so a secret that contains another is hidden whole.
        self.secrets = sorted((v for v in values if len(v) >= self.MIN_LENGTH), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, HIDDEN)
        return mask_text(text)


class TextFormatter(logging.Formatter):
    def __init__(self, colour: bool = False, redactor: Redactor | None = None):
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(job)s: %(message)s")
        self.colour = colour
        self.redact = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", "")
        record.job = f" [{getattr(record, 'queue', '')} {getattr(record, 'job_type', '')} {job_id}]" if job_id else ""
        line = self.redact(super().format(record))
        if self.colour and record.levelname in _COLOURS:
            return f"{_COLOURS[record.levelname]}{line}{_RESET}"
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor | None = None):
        super().__init__()
        self.redact = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        # Redacted before JSON escaping, which would hide a quoted "otp": "…" pair from the masks.
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
            "process": record.process,
        }
        for field in _JOB_FIELDS:
            if getattr(record, field, ""):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = self.redact(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str)


def build_logging(config: Config) -> dict[str, Any]:
    """A dictConfig for the given configuration; creates the log directory."""
    config.log_dir.mkdir(parents=True, exist_ok=True)
    file_formatter = "json" if config.log_json else "text"
    redactor = Redactor(config)
    rotating = {"class": "logging.handlers.RotatingFileHandler", "maxBytes": 50 * 1024 * 1024, "backupCount": 5}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"job_context": {"()": JobContextFilter}},
        "formatters": {
            "json": {"()": JsonFormatter, "redactor": redactor},
            "text": {"()": TextFormatter, "redactor": redactor},
            "console": {"()": JsonFormatter, "redactor": redactor}
            if config.log_json
            else {"()": TextFormatter, "colour": True, "redactor": redactor},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "console", "filters": ["job_context"]},
            "combined": rotating
            | {
                "filename": str(config.log_dir / "combined.log"),
                "formatter": file_formatter,
                "filters": ["job_context"],
            },
            "error": rotating
            | {
                "filename": str(config.log_dir / "error.log"),
                "formatter": file_formatter,
                "filters": ["job_context"],
                "level": "ERROR",
            },
        },
        "root": {"handlers": ["console", "combined", "error"], "level": config.log_level},
        "loggers": {
            # rq-scheduler adds its own console handler to a logger that has none; give it ours.
            "rq_scheduler.scheduler": {
                "handlers": ["console", "combined", "error"],
                "level": config.log_level,
                "propagate": False,
            },
            "django.db.backends": {"level": "INFO"},
            "pika": {"level": "WARNING"},
        },
    }

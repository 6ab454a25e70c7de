"""Logging: logs/combined.log, logs/error.log and the console.

Development gets coloured text on the console; production gets one JSON object a line
everywhere, for the log shipper. Every record written while an RQ job runs carries the job's
id, queue and type, so one grep follows a job through all processes.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supworker.config import Config

_COLOURS = {"DEBUG": "\033[36m", "INFO": "\033[32m", "WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[41m"}
_RESET = "\033[0m"
_JOB_FIELDS = ("job_id", "queue", "job_type")


class JobContextFilter(logging.Filter):
    """Adds job_id, queue and job_type of the RQ job running in this process, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            from rq import get_current_job

            job = get_current_job()
            record.job_id = job.id if job else ""
            record.queue = job.origin if job else ""
            record.job_type = (job.meta.get("type") or job.func_name) if job else ""
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, colour: bool = False):
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(job)s: %(message)s")
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", "")
        record.job = f" [{record.queue} {record.job_type} {job_id}]" if job_id else ""
        line = super().format(record)
        if self.colour and record.levelname in _COLOURS:
            return f"{_COLOURS[record.levelname]}{line}{_RESET}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for field in _JOB_FIELDS:
            if getattr(record, field, ""):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def build_logging(config: Config) -> dict[str, Any]:
    """A dictConfig for the given configuration; creates the log directory."""
    config.log_dir.mkdir(parents=True, exist_ok=True)
    file_formatter = "json" if config.log_json else "text"
    rotating = {"class": "logging.handlers.RotatingFileHandler", "maxBytes": 50 * 1024 * 1024, "backupCount": 5}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"job_context": {"()": JobContextFilter}},
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {"()": TextFormatter},
            "console": {"()": JsonFormatter} if config.log_json else {"()": TextFormatter, "colour": True},
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

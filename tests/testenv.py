"""Loaded with `-p tests.testenv`, before pytest-django imports the settings.

Tests run against the project-local servers of `make services`, never against whatever a
developer's `.env` or shell points at: they flush Redis and create queues. Redis DB 15 keeps
test keys apart from the jobs of a `make run` on the same machine.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"

os.environ.update(
    {
        "SUPWORKER_ENV_FILE": os.devnull,
        "SUPWORKER_ENV": "development",
        "DATABASE_URL": "postgres://supworker:supworker@127.0.0.1:5440/supworker",
        "REDIS_URL": "redis://127.0.0.1:6390/15",
        "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5690/%2F",
        "LOG_DIR": str(OUTPUT / "logs"),
        "MEDIA_ROOT": str(OUTPUT / "media"),
        "TEMP_DIR": str(OUTPUT / "tmp"),
    }
)
for name in ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB", "AWS_S3_BUCKET", "SMTP_HOST", "NODE_ENV"):
    os.environ.pop(name, None)

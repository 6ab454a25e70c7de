"""Health checks of what supworker depends on, each timed: PostgreSQL, Redis, RabbitMQ, storage."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from django.core.files.storage import default_storage
from django.db import connection

from supworker.enqueue import redis_connection
from supworker.rabbit.connection import connect


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    latency_ms: float
    error: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _postgres() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    redis_connection().ping()


def _rabbitmq() -> None:
    connect("health check").close()


def _storage() -> None:
    default_storage.exists("health-check-probe")  # a round trip to the store, whatever the answer


CHECKS: dict[str, Callable[[], None]] = {
    "postgresql": _postgres,
    "redis": _redis,
    "rabbitmq": _rabbitmq,
    "storage": _storage,
}


def run_checks(names: tuple[str, ...] | None = None) -> list[CheckResult]:
    """Run the named checks (all by default), each timed; a failure is a result, never an exception."""
    results = []
    for name, check in CHECKS.items():
        if names is not None and name not in names:
            continue
        started = time.perf_counter()
        try:
            check()
            results.append(CheckResult(name, True, round((time.perf_counter() - started) * 1000, 2)))
        except Exception as exc:  # noqa: BLE001 - a failed dependency is a result, not a crash
            error = f"{type(exc).__name__}: {exc}"[:500]
            results.append(CheckResult(name, False, round((time.perf_counter() - started) * 1000, 2), error))
    return results

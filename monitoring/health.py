"""GET /health: each dependency checked and timed; an overall status for people and load balancers.

PostgreSQL and Redis failing means no job can run: "down". RabbitMQ or storage failing means
part of the service is (ingestion, media): "degraded". Either way the answer is 503 and names
what failed, so a load balancer stops sending work and an operator knows where to look.
"""

from __future__ import annotations

import time
from typing import Any

from monitoring.checks import CheckResult, run_checks

STARTED_AT = time.time()
CRITICAL = ("postgresql", "redis")


def uptime_seconds() -> float:
    return round(time.time() - STARTED_AT, 3)


def status_of(results: list[CheckResult]) -> str:
    failing = {r.name for r in results if not r.ok}
    if not failing:
        return "ok"
    return "down" if failing & set(CRITICAL) else "degraded"


def report(names: tuple[str, ...] | None = None) -> dict[str, Any]:
    results = run_checks(names)
    return {
        "status": status_of(results),
        "uptime_seconds": uptime_seconds(),
        "failing": [r.name for r in results if not r.ok],
        "checks": {r.name: {"ok": r.ok, "latency_ms": r.latency_ms, "error": r.error} for r in results},
    }

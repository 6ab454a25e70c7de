"""The health check the cron table runs: each dependency checked, the result recorded in
health_check_results (the admin's history), a failing one logged as an error for alerting."""

from __future__ import annotations

import logging
from typing import Any

from monitoring.checks import run_checks
from monitoring.models import HealthCheckResult
from supworker.envelope import Envelope
from supworker.handlers import handles

log = logging.getLogger(__name__)


@handles("monitoring.health")
def check_health(envelope: Envelope) -> dict[str, Any]:
    results = run_checks()
    healthy = all(result.ok for result in results)
    HealthCheckResult.objects.create(healthy=healthy, checks={result.name: result.as_dict() for result in results})
    for result in results:
        if not result.ok:
            log.error("health check %s failed after %.0f ms: %s", result.name, result.latency_ms, result.error)
    return {"healthy": healthy, "counts": {f"{result.name}_ok": int(result.ok) for result in results}}

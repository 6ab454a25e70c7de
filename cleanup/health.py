"""Runs the monitoring checks, records the result, logs an error when one fails."""

from __future__ import annotations

import logging

from cleanup.base import Cleanup, Run
from monitoring.checks import run_checks
from monitoring.models import HealthCheckResult

log = logging.getLogger(__name__)


class Health(Cleanup):
    name = "health"

    def work(self, run: Run) -> None:
        results = run_checks()
        healthy = all(r.ok for r in results)
        if not run.dry_run:
            HealthCheckResult.objects.create(healthy=healthy, checks={r.name: r.as_dict() for r in results})
        for result in results:
            run.counts[f"{result.name}_ok"] = int(result.ok)
            if not result.ok:
                log.error("health check %s failed after %.0f ms: %s", result.name, result.latency_ms, result.error)

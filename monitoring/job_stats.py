"""Per job type over the last hour and day: how many, how many succeeded, p50 and p95 duration."""

from __future__ import annotations

from typing import Any

from django.db import connection

WINDOWS = {"hour": "1 hour", "day": "1 day"}
SQL = """
SELECT job_type,
       count(*) AS jobs,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms
FROM job_runs
WHERE finished_at >= now() - %s::interval AND status IN ('succeeded', 'failed')
GROUP BY job_type ORDER BY job_type
"""


def report() -> dict[str, Any]:
    windows: dict[str, Any] = {}
    with connection.cursor() as cursor:
        for name, interval in WINDOWS.items():
            cursor.execute(SQL, [interval])
            windows[name] = {
                job_type: {
                    "jobs": jobs,
                    "succeeded": succeeded,
                    "success_rate": round(succeeded / jobs, 4) if jobs else None,
                    "p50_ms": round(p50, 1) if p50 is not None else None,
                    "p95_ms": round(p95, 1) if p95 is not None else None,
                }
                for job_type, jobs, succeeded, p50, p95 in cursor.fetchall()
            }
    return {"windows": windows}

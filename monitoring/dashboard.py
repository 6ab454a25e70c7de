"""What the admin dashboard shows: queues, the last 24 hours of jobs, the apps' panels (supworker.dashboard),
recent dead letters."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Min
from django.utils import timezone
from django_rq.settings import get_queues_map

from monitoring import queues
from monitoring.charts import Bar, stacked_bars
from supworker import dashboard
from supworker.models import DeadLetter, Message

HOURLY_SQL = """
SELECT date_trunc('hour', finished_at) AS hour,
       count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'failed')
FROM job_runs WHERE finished_at >= %s GROUP BY 1
"""


def last_24_hours() -> list[Bar]:
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=23)
    with connection.cursor() as cursor:
        cursor.execute(HOURLY_SQL, [start])
        by_hour = {hour: (ok, failed) for hour, ok, failed in cursor.fetchall()}
    hours = [start + timedelta(hours=n) for n in range(24)]
    return [Bar(f"{hour:%H}h", *by_hour.get(hour, (0, 0))) for hour in hours]


def context() -> dict[str, Any]:
    bars = last_24_hours()
    queue_report = queues.report()
    return {
        # With django-rq's index of each queue (its pages number them in name order) for the links.
        "queues": [(name, get_queues_map()[name], q) for name, q in queue_report["queues"].items()],
        "workers": queue_report["workers"],
        "chart": stacked_bars(bars),
        "succeeded_24h": sum(b.ok for b in bars),
        "failed_24h": sum(b.failed for b in bars),
        "panels": dashboard.panels(),
        "dead_letters": DeadLetter.objects.filter(requeued_at__isnull=True).order_by("-failed_at")[:10],
        "dead_letter_count": DeadLetter.objects.filter(requeued_at__isnull=True).count(),
        "oldest_dead_letter": DeadLetter.objects.filter(requeued_at__isnull=True).aggregate(Min("failed_at"))[
            "failed_at__min"
        ],
        "dead_letter_retention_days": settings.CONFIG.dead_letter_retention_days,
        "media_failed": Message.objects.filter(media_status="failed").count(),
        "media_in_flight": Message.objects.filter(media_status__in=["queued", "processing"]).count(),
    }

"""E-mails not sent because their address is suppressed, on GET /metrics
(`supworker_emails_suppressed_total{type}`); read from notifications/suppression.py's Redis
counters at scrape time, registered in supworker.metrics by NotificationsConfig.ready."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from notifications import suppression
from supworker.enqueue import redis_connection


class SuppressedCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "supworker_emails_suppressed",
            "E-mails and OTP e-mails not sent: their address is on the suppression list (bounce or complaint)",
            labels=["type"],
        )
        for job_type, count in sorted(suppression.not_sent_counts(redis_connection()).items()):
            family.add_metric([job_type], count)
        yield family

"""The LMS OTP worker's statistics on GET /metrics (the supworker_lms_* families), for OTP e-mails.

Read from notifications/otp_stats.py at scrape time; registered in supworker.metrics by
NotificationsConfig.ready.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from notifications import otp_stats
from supworker.enqueue import redis_connection

# otp_stats field -> metric name, help.
LMS_COUNTERS = {
    "processedJobs": ("supworker_lms_processed_jobs", "OTP e-mails delivered (the LMS worker's processedJobs)"),
    "failedJobs": ("supworker_lms_failed_jobs", "OTP e-mails failed for good, after the last retry (failedJobs)"),
    "retriedJobs": ("supworker_lms_retried_jobs", "Retries of OTP e-mails made (the LMS worker's retriedJobs)"),
}


class LmsCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        stats = otp_stats.read(redis_connection())
        for field, (name, text) in LMS_COUNTERS.items():
            family = CounterMetricFamily(name, text)
            family.add_metric([], getattr(stats, field))
            yield family
        last = GaugeMetricFamily(
            "supworker_lms_last_processed_timestamp_seconds", "When an OTP e-mail was last delivered (lastProcessedAt)"
        )
        last.add_metric([], stats.lastProcessedAt or 0.0)
        yield last

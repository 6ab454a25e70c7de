"""The service-wide families on GET /metrics: queues, job outcomes and durations, consumers.
Read at scrape time from Redis and RQ, so every worker process's numbers are counted without
shared memory between processes. Registered in supworker.metrics by MonitoringConfig.ready."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from redis import Redis
from rq import Queue, Worker

from supworker import jobtypes
from supworker.enqueue import redis_connection
from supworker.stats import CONSUMER_KEY, CONSUMERS_KEY, DURATION_BUCKETS, DURATION_KEY, job_counts

QUEUE_STATES = {
    "waiting": lambda q: q.count,
    "active": lambda q: q.started_job_registry.count,
    "scheduled": lambda q: q.scheduled_job_registry.count,
    "deferred": lambda q: q.deferred_job_registry.count,
    "finished": lambda q: q.finished_job_registry.count,
    "failed": lambda q: q.failed_job_registry.count,
}
# A consumer's intake counters (supworker/rabbit/consumer.py Stats): field -> metric name, help.
CONSUMER_COUNTERS = {
    "receivedMessages": ("supworker_consumer_received_messages", "Messages taken from RabbitMQ"),
    "enqueuedJobs": ("supworker_consumer_enqueued_jobs", "Messages that became RQ jobs"),
    "rejectedMessages": ("supworker_consumer_rejected_messages", "Invalid messages, dead-lettered"),
    "duplicateMessages": ("supworker_consumer_duplicate_messages", "Messages of a job already enqueued, skipped"),
    "redeliveredMessages": ("supworker_consumer_redelivered_messages", "Messages RabbitMQ delivered again"),
}


class SupworkerCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        connection = redis_connection()
        depth = GaugeMetricFamily("supworker_queue_jobs", "RQ jobs per queue and state", labels=["queue", "state"])
        workers = GaugeMetricFamily("supworker_queue_workers", "RQ workers listening to a queue", labels=["queue"])
        all_workers = Worker.all(connection=connection)
        for spec in jobtypes.queues():
            queue = Queue(spec.name, connection=connection)
            for state, read in QUEUE_STATES.items():
                depth.add_metric([spec.name, state], read(queue))
            workers.add_metric([spec.name], sum(1 for w in all_workers if spec.name in w.queue_names()))
        yield depth
        yield workers

        outcomes = CounterMetricFamily("supworker_jobs", "Job items by type and outcome", labels=["type", "outcome"])
        for key, value in job_counts(connection).items():
            job_type, _, outcome = key.rpartition(":")
            outcomes.add_metric([job_type, outcome], value)
        yield outcomes

        yield from self._durations(connection)
        yield from self._consumers(connection)

    def _durations(self, connection: Redis) -> Iterator[Metric]:
        raw = connection.hgetall(DURATION_KEY)
        per_type: dict[str, dict[str, float]] = defaultdict(dict)
        for field, value in raw.items():
            job_type, _, part = field.decode().rpartition("|")
            per_type[job_type][part] = float(value)
        family = HistogramMetricFamily(
            "supworker_job_duration_seconds",
            "Time a job item took (a batch's time shared by its items)",
            labels=["type"],
        )
        for job_type, parts in sorted(per_type.items()):
            # Every bucket, in order, zero where nothing fell yet: Prometheus needs them all.
            buckets = [(floatToGoString(b), parts.get(f"le={b}", 0.0)) for b in DURATION_BUCKETS]
            buckets.append(("+Inf", parts.get("le=+Inf", 0.0)))
            family.add_metric([job_type], buckets=buckets, sum_value=parts.get("sum", 0.0))
        yield family

    def _consumers(self, connection: Redis) -> Iterator[Metric]:
        counters = {
            field: CounterMetricFamily(name, text, labels=["consumer"])
            for field, (name, text) in CONSUMER_COUNTERS.items()
        }
        last = GaugeMetricFamily(
            "supworker_consumer_last_message_timestamp_seconds",
            "When the consumer last took a message",
            labels=["consumer"],
        )
        for raw_name in connection.smembers(CONSUMERS_KEY):
            name = raw_name.decode()
            stats = {k.decode(): v.decode() for k, v in connection.hgetall(CONSUMER_KEY + name).items()}
            if not stats:
                continue
            for field, family in counters.items():
                family.add_metric([name], float(stats.get(field, 0)))
            last.add_metric([name], float(stats.get("lastMessageAt", 0)))
        yield from counters.values()
        yield last

"""The one Prometheus registry GET /metrics serves. Each app adds its own collectors to it from its
AppConfig.ready, so the core and the page that serves it know no app's metrics.

Collectors read at scrape time (from Redis and RQ), so every process's numbers are counted
without shared memory between processes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

# No auto-describe: describing would run every collector's Redis reads at registration.
REGISTRY = CollectorRegistry(auto_describe=False)
_by_type: dict[type[Collector], Collector] = {}


def register_collector(collector: Collector) -> None:
    """Serve `collector`'s families on /metrics. One per class: registering a second instance of
    a class replaces the first, so an app's ready() run twice does not count its metrics twice."""
    previous = _by_type.pop(type(collector), None)
    if previous is not None:
        REGISTRY.unregister(previous)
    REGISTRY.register(collector)
    _by_type[type(collector)] = collector

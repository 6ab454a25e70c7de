"""The job types, declared by the domain apps: each app's `jobtypes.py` says all about its own.

The core is the machinery (consumer, enqueue, runner, scheduler) and names no job type; what
it needs to know comes from three kinds of declaration, made with `declare(...)`:

- `WorkerKind`: a kind of RQ worker and the queues it drains, highest priority first
  (`rqworker media` drains media_high, then media);
- `Domain`: what publishers send under one routing-key domain (`media.#`): its payload
  schema, the RabbitMQ queue it arrives on, the fields sealed before it leaves the consumer;
- `JobType`: one `<domain>.<type>`: its queue, priority, timeout, batch size, and for work
  the cron table runs, its default schedule (`CRON_<TYPE>` changes it).

`discover` imports `<app>.jobtypes` for each app that has one, while the settings are read:
RQ_QUEUES and the cron table depend on it. So a jobtypes module imports declarations only
(pydantic, supworker.payloads, this module), never models or Django's app registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import import_module
from importlib.util import find_spec
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from pydantic import BaseModel

MAX_BATCH_TIMEOUT = 600


@dataclass(frozen=True)
class QueueSpec:
    name: str
    default_timeout: int  # seconds; a job type may ask for more when it is enqueued


@dataclass(frozen=True)
class WorkerKind:
    name: str  # what `manage.py rqworker <name>` is given
    queues: tuple[QueueSpec, ...]  # highest priority first


@dataclass(frozen=True)
class Domain:
    name: str  # the routing key's first part
    schema: type[BaseModel]  # what a message must hold: a supworker.payloads.Message
    # The RabbitMQ queue, "<RABBITMQ_QUEUE_PREFIX>.<rabbit_queue>", bound to "<name>.#" on the
    # main exchange. None: the LMS queue RABBITMQ_QUEUE_NAME on the default exchange, declared
    # exactly as its publishers declare it.
    rabbit_queue: str | None
    sealed: tuple[str, ...] = ()  # secret fields, sealed from the consumer on (supworker.envelope)
    only_type: str | None = None  # the schema has no `type`: every message is this one
    # A message without `type` takes it from the routing key's second part (device.register).
    typed_by_routing_key: bool = False
    adoptable: bool = False  # RABBITMQ_ADOPT_QUEUES may name a Node service's queue of this domain

    @property
    def binding(self) -> str | None:
        return None if self.rabbit_queue is None else f"{self.name}.#"


@dataclass(frozen=True)
class JobType:
    name: str  # "<domain>.<type>"
    queue: str  # the queue of normal priority
    high_queue: str  # where a message asking for priority "high" goes
    priority: int  # the Node worker's priority number, for people and metrics
    timeout: int  # seconds one item may take; a batch gets this per item, up to MAX_BATCH_TIMEOUT
    batch_size: int = 1  # items one RQ job carries (micro-batching saves RQ's per-job cost)
    # How much of batch_size one item's payload takes, when items differ in work: a push to 1,000
    # users is not one push. None: every item counts 1. The batch's timeout follows the same count.
    weight: Callable[[Mapping[str, Any]], int] | None = None
    published: bool = True  # False: the cron table runs it; publishers cannot ask for it
    cron: str | None = None  # default schedule (UTC) on the cron table

    @property
    def domain(self) -> str:
        return self.name.partition(".")[0]

    @property
    def short_name(self) -> str:
        return self.name.partition(".")[2]

    def queue_for(self, requested: str | None) -> str:
        """A message may raise or lower its priority within its domain."""
        if requested == "high":
            return self.high_queue
        if requested == "low":
            return self.queue
        return self.high_queue if self.priority >= 2 else self.queue

    def weight_of(self, payload: Mapping[str, Any]) -> int:
        return 1 if self.weight is None else max(self.weight(payload), 1)

    def batch_timeout(self, items: int) -> int:
        """For `items` items (or units of weight)."""
        return min(self.timeout * max(items, 1), max(MAX_BATCH_TIMEOUT, self.timeout))


Declaration = WorkerKind | Domain | JobType

_WORKER_KINDS: dict[str, WorkerKind] = {}
_DOMAINS: dict[str, Domain] = {}
_JOB_TYPES: dict[str, JobType] = {}
_SEALED_FIELDS: frozenset[str] = frozenset()  # of every domain; kept by declare(), read per message


def _put(table: dict, item: Declaration) -> None:
    known = table.get(item.name)
    if known is not None and known != item:
        raise ImproperlyConfigured(f"{type(item).__name__} {item.name!r} is declared twice, differently")
    table[item.name] = item


def declare(*items: Declaration) -> None:
    """Add a domain app's declarations; a name declared again must say the same."""
    for item in items:
        if isinstance(item, WorkerKind):
            _put(_WORKER_KINDS, item)
        elif isinstance(item, Domain):
            if item.rabbit_queue is None and any(
                d.rabbit_queue is None and d.name != item.name for d in _DOMAINS.values()
            ):
                raise ImproperlyConfigured(f"domain {item.name!r}: only one domain arrives on RABBITMQ_QUEUE_NAME")
            _put(_DOMAINS, item)
            global _SEALED_FIELDS
            _SEALED_FIELDS = _SEALED_FIELDS.union(item.sealed)
        else:
            _put(_JOB_TYPES, item)


def discover(apps: Iterable[str]) -> None:
    """Import `<app>.jobtypes` of each app that has one, then check the declarations fit together."""
    for app in apps:
        if find_spec(f"{app}.jobtypes") is not None:
            import_module(f"{app}.jobtypes")
    queues = {spec.name for kind in _WORKER_KINDS.values() for spec in kind.queues}
    for job_type in _JOB_TYPES.values():
        for queue in (job_type.queue, job_type.high_queue):
            if queue not in queues:
                raise ImproperlyConfigured(f"job type {job_type.name!r} goes to {queue!r}, which no worker kind drains")
        if job_type.published and job_type.domain not in _DOMAINS:
            raise ImproperlyConfigured(f"job type {job_type.name!r} is published, but no domain {job_type.domain!r}")
    cron_names = [job_type.short_name for job_type in scheduled()]
    if len(cron_names) != len(set(cron_names)):
        raise ImproperlyConfigured(f"two scheduled job types share a short name (CRON_<NAME>): {sorted(cron_names)}")


def job_types() -> Mapping[str, JobType]:
    return _JOB_TYPES


def job_type(name: str) -> JobType:
    try:
        return _JOB_TYPES[name]
    except KeyError:
        raise ImproperlyConfigured(f"no app declares the job type {name!r} (in its jobtypes.py)") from None


def domains() -> Mapping[str, Domain]:
    return _DOMAINS


def worker_kinds() -> Mapping[str, WorkerKind]:
    return _WORKER_KINDS


def queues() -> list[QueueSpec]:
    """Every RQ queue, in the order the worker kinds list them."""
    return [spec for kind in _WORKER_KINDS.values() for spec in kind.queues]


def sealed_fields() -> frozenset[str]:
    """The secret fields of every domain: a rejected message's domain may be unknown."""
    return _SEALED_FIELDS


def scheduled() -> list[JobType]:
    """The job types with a default schedule, in declaration order."""
    return [job_type for job_type in _JOB_TYPES.values() if job_type.cron is not None]

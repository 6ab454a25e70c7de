"""How domain code plugs into the runner: a handler per job type, and two kinds of failure.

A domain app's `jobs.py` registers its handlers at import:

    @handles("media.image")
    def process_image(envelope: Envelope) -> dict: ...          # one item at a time

    @handles_batch("notification.push")
    def send_pushes(envelopes: list[Envelope]) -> list[Outcome]: ...   # a whole batch at once

A `jobs.py` may also register work for the worker process itself (`@before_fork`): done once
before it forks work-horses, each horse inherits the result instead of redoing it per job.
And it may ask to hear what the runner decided for each item of a type (`@on_settled`):
succeeded, to be retried, or failed for good (e.g. the OTP e-mail statistics).

A handler raises PermanentError for what can never succeed (bad payload, corrupt media, an
unregistered token): the item is dead-lettered at once. Anything else it raises is transient
(network, 5xx, 429, a broker restart): the item is retried with backoff, then dead-lettered.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from traceback import format_exception
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules

from supworker import jobtypes
from supworker.envelope import Envelope
from supworker.masking import mask_text

logger = logging.getLogger(__name__)


class PermanentError(Exception):
    """This item will never succeed; do not retry it."""


class TransientError(Exception):
    """Worth trying again later; `retry_after` (seconds) is the provider's wish, if it said one."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Outcome:
    job_id: str
    ok: bool
    result: Any = None
    error: str = ""
    permanent: bool = False
    retry_after: float | None = None
    traceback: str = ""

    @classmethod
    def success(cls, envelope: Envelope, result: Any = None) -> Outcome:
        return cls(envelope.job_id, True, result=result)

    @classmethod
    def failure(cls, envelope: Envelope, exc: BaseException) -> Outcome:
        return cls(
            envelope.job_id,
            False,
            # Providers' errors quote addresses ("554 <bob@…> rejected"): stored masked, as logged.
            error=mask_text(f"{type(exc).__name__}: {exc}"),
            permanent=isinstance(exc, PermanentError),
            retry_after=getattr(exc, "retry_after", None),
            traceback=mask_text("".join(format_exception(exc))[-20_000:]) if exc.__traceback__ else "",
        )


@dataclass(frozen=True)
class Settled:
    """What the runner decided for one item: `status` is succeeded, retrying or failed (for good)."""

    envelope: Envelope
    outcome: Outcome
    status: str


BatchHandler = Callable[[list[Envelope]], list[Outcome]]
SettledListener = Callable[[list[Settled]], None]
_HANDLERS: dict[str, BatchHandler] = {}
_discovered = False


def _declared(job_type: str) -> str:
    """A handler for a job type no app declares would never be given a job: refuse it at start-up."""
    if job_type not in jobtypes.job_types():
        raise ImproperlyConfigured(f"a handler for {job_type!r}, which no app declares in its jobtypes.py")
    return job_type


def handles_batch(job_type: str) -> Callable[[BatchHandler], BatchHandler]:
    _declared(job_type)

    def register(fn: BatchHandler) -> BatchHandler:
        _HANDLERS[job_type] = fn
        return fn

    return register


def one_at_a_time(fn: Callable[[Envelope], Any]) -> BatchHandler:
    """A batch handler that calls `fn` on each item; whatever it raises becomes that item's outcome."""

    def each(envelopes: list[Envelope]) -> list[Outcome]:
        outcomes = []
        for envelope in envelopes:
            try:
                outcomes.append(Outcome.success(envelope, fn(envelope)))
            except Exception as exc:  # noqa: BLE001 - every failure becomes an outcome
                outcomes.append(Outcome.failure(envelope, exc))
        return outcomes

    return each


def handles(job_type: str) -> Callable[[Callable[[Envelope], Any]], Callable[[Envelope], Any]]:
    """Register a one-item handler; the runner calls it for each item of a batch."""
    _declared(job_type)

    def register(fn: Callable[[Envelope], Any]) -> Callable[[Envelope], Any]:
        _HANDLERS[job_type] = one_at_a_time(fn)
        return fn

    return register


_BEFORE_FORK: list[Callable[[], None]] = []
_ON_SETTLED: dict[str, list[SettledListener]] = defaultdict(list)


def on_settled(job_type: str) -> Callable[[SettledListener], SettledListener]:
    """Register a listener told, once the items are recorded, what became of each item of `job_type`."""

    def register(fn: SettledListener) -> SettledListener:
        _ON_SETTLED[job_type].append(fn)
        return fn

    return register


def report_settled(settled: list[Settled]) -> None:
    """Tell each job type's listeners about its items. A listener's failure is logged, never the
    batch's: the items are recorded already, and statistics are not worth running them again."""
    load_handlers()
    by_type: dict[str, list[Settled]] = defaultdict(list)
    for item in settled:
        by_type[item.envelope.job_type].append(item)
    for job_type, items in by_type.items():
        for listener in _ON_SETTLED.get(job_type, ()):
            try:
                listener(items)
            except Exception:
                logger.warning("%s failed on %d %s item(s)", listener.__qualname__, len(items), job_type, exc_info=True)


def before_fork(function: Callable[[], None]) -> Callable[[], None]:
    """Register `function` to run in an RQ worker before it forks work-horses (at start and at each
    registry cleanup), so that the horses inherit what it builds: it must be cheap when nothing
    has changed since its last run."""
    _BEFORE_FORK.append(function)
    return function


def prepare_worker() -> None:
    """Load the handlers and run the before-fork work; a failure there only costs each horse the work."""
    load_handlers()
    for function in _BEFORE_FORK:
        try:
            function()
        except Exception:
            logger.warning("%s failed before forking; each work-horse will do it", function.__qualname__, exc_info=True)


def load_handlers() -> None:
    """Import each installed app's jobs.py, which registers its handlers; once per process."""
    global _discovered
    if not _discovered:
        autodiscover_modules("jobs")
        _discovered = True


def handler_for(job_type: str) -> BatchHandler | None:
    load_handlers()
    return _HANDLERS.get(job_type)

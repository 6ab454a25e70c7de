"""One media job from start to end, the same for every kind of media.

    payload → message marked processing → limits checked from the store's size → source
    fetched into a per-job temporary directory → processor (images / video / audio) → outputs
    stored under media/<messageId>/processed/ → message ready → media.processed event.

A PermanentError (bad file, missing message, limits) marks the message failed, publishes
media.failed and is re-raised so the runner dead-letters the job without retrying. Any other
error is re-raised for the runner to retry; the message goes back to "queued" with the error,
and only when this was the last try is it marked failed and media.failed published.
The temporary directory is removed on success, failure and timeout alike.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from django.conf import settings

from media_jobs import results
from media_jobs.config import MediaConfig
from media_jobs.limits import Deadline, check_size
from media_jobs.outputs import Processed, output_key
from supworker import jobtypes, storage
from supworker.envelope import Envelope
from supworker.handlers import PermanentError

log = logging.getLogger(__name__)

Processor = Callable[[Path, Path, MediaConfig, Deadline], Processed]


@contextmanager
def job_directory(job_id: str) -> Iterator[Path]:
    """The scratch directory of one job, always removed when the job ends. Its name comes from
    the job id: one left by an earlier run of the same job, whose work-horse was killed with
    SIGKILL, is removed first (a job id runs in one place at a time)."""
    parent = Path(settings.CONFIG.temp_dir)
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f"media-{hashlib.sha256(job_id.encode()).hexdigest()[:32]}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def size_limit(kind: str, limits: MediaConfig) -> int:
    return {"image": limits.image_max_bytes, "video": limits.video_max_bytes, "audio": limits.audio_max_bytes}[kind]


@dataclass(frozen=True)
class Source:
    """What a media job's payload says to process. The payload was validated once, by the consumer
    (MediaJob in media_jobs/jobtypes.py; a dead letter requeued from the admin carries the envelope
    it validated), so it is read as it is; the key is checked again where it meets the store
    (supworker/storage.py), the one place a bad key could do harm."""

    kind: str  # image, video or audio
    key: str
    message_id: UUID

    @classmethod
    def of(cls, envelope: Envelope) -> Source:
        payload = envelope.payload
        return cls(payload["type"], payload["s3Key"], UUID(payload["messageId"]))


def run(envelope: Envelope, processor: Processor) -> dict[str, Any]:
    job = Source.of(envelope)
    try:
        result = _process(envelope, job, processor)
    except PermanentError as exc:
        _fail(envelope, job.message_id, str(exc))
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if envelope.attempt >= settings.CONFIG.max_retries:
            _fail(envelope, job.message_id, reason)
        else:
            results.mark_retrying(job.message_id, reason)
        raise
    return result


def _process(envelope: Envelope, job: Source, processor: Processor) -> dict[str, Any]:
    limits = settings.CONFIG.media
    deadline = Deadline.for_job(jobtypes.job_type(envelope.job_type).timeout)
    results.mark_processing(job.message_id)
    check_size(job.kind, storage.size(job.key), size_limit(job.kind, limits))
    with job_directory(envelope.job_id) as workdir:
        source = storage.fetch(job.key, workdir)
        check_size(job.kind, source.stat().st_size, size_limit(job.kind, limits))
        processed = processor(source, workdir, limits, deadline)
        keys: dict[str, str] = {}
        for output in processed.outputs:
            stored = storage.save(output_key(job.message_id, output.name), output.path, output.content_type)
            keys[output.role] = stored.key
    media_key, thumbnail_key = keys["media"], keys.get("thumbnail")
    metadata = processed.metadata
    results.mark_ready(job.message_id, media_key, thumbnail_key, metadata)
    results.publish(
        results.PROCESSED,
        results.processed_event(envelope.job_id, envelope.payload, media_key, thumbnail_key, metadata),
    )
    log.info("media %s of message %s ready: %s", job.kind, job.message_id, media_key)
    return {"messageId": str(job.message_id), "mediaUrl": media_key, "thumbnailUrl": thumbnail_key}


def _fail(envelope: Envelope, message_id: UUID, reason: str) -> None:
    results.mark_failed(message_id, reason)
    try:
        results.publish(results.FAILED, results.failed_event(envelope.job_id, envelope.payload, reason))
    except Exception:  # the failure itself is recorded; a lost event must not hide it
        log.exception("could not publish media.failed for message %s", message_id)

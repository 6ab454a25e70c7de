"""The message row's media columns, and the events that tell the messenger about them."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db.models import Q

from supworker import storage
from supworker.handlers import PermanentError
from supworker.models.messenger import MediaStatus, Message
from supworker.rabbit.publisher import Publisher

PROCESSED = "media.processed"  # both in supworker.rabbit.topology.OWN_EVENTS: our consumer skips them
FAILED = "media.failed"
ERROR_MAX_CHARS = 2000


def mark_processing(message_id: UUID) -> None:
    """The message must exist; a missing one can never be processed.

    A message whose media is already ready (a job run again) stays ready while it runs: its
    current files are still there and valid. The messenger sets "queued" when it wants new media.
    """
    message = Message.objects.filter(pk=message_id)
    if not message.exists():
        raise PermanentError(f"message {message_id} does not exist")
    message.filter(~Q(media_status=MediaStatus.READY) | Q(media_status__isnull=True)).update(
        media_status=MediaStatus.PROCESSING, media_error=""
    )


def mark_ready(message_id: UUID, media_key: str, thumbnail_key: str | None, metadata: dict[str, Any]) -> None:
    updated = Message.objects.filter(pk=message_id).update(
        media_status=MediaStatus.READY,
        media_error="",
        media_url=media_key,
        thumbnail_url=thumbnail_key,
        media_metadata=metadata,
    )
    if not updated:
        # Deleted meanwhile, by the messenger or by a user's erasure (docs/privacy.md): the files
        # just stored must not outlive it, or an erased user's media would come back.
        storage.delete([media_key, thumbnail_key])
        raise PermanentError(f"message {message_id} was deleted while its media was processed; its files were removed")


def mark_failed(message_id: UUID, reason: str) -> None:
    # A message that already has good media (a redelivered job) keeps it.
    Message.objects.filter(pk=message_id).filter(
        ~Q(media_status=MediaStatus.READY) | Q(media_status__isnull=True)
    ).update(media_status=MediaStatus.FAILED, media_error=reason[:ERROR_MAX_CHARS])


def mark_retrying(message_id: UUID, reason: str) -> None:
    Message.objects.filter(pk=message_id).filter(
        ~Q(media_status=MediaStatus.READY) | Q(media_status__isnull=True)
    ).update(media_status=MediaStatus.QUEUED, media_error=f"will be retried: {reason}"[:ERROR_MAX_CHARS])


def publish(routing_key: str, body: dict[str, Any]) -> None:
    """One confirmed publish on the main exchange (settings.CONFIG.rabbitmq_exchange)."""
    with Publisher() as publisher:
        publisher.publish_to(settings.CONFIG.rabbitmq_exchange, routing_key, body | {"timestamp": _now_ms()})


def processed_event(job_id: str, payload: dict[str, Any], media_key: str, thumbnail_key: str | None,
                    metadata: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    return {
        "type": PROCESSED,
        "jobId": job_id,
        "messageId": payload["messageId"],
        "userId": payload["userId"],
        "mediaType": payload["type"],
        "status": MediaStatus.READY.value,
        "mediaUrl": media_key,
        "thumbnailUrl": thumbnail_key,
        "metadata": metadata,
    }


def failed_event(job_id: str, payload: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        "type": FAILED,
        "jobId": job_id,
        "messageId": payload.get("messageId"),
        "userId": payload.get("userId"),
        "mediaType": payload.get("type"),
        "status": MediaStatus.FAILED.value,
        "error": reason[:ERROR_MAX_CHARS],
    }


def _now_ms() -> int:
    return int(time.time() * 1000)

"""The media job types: what a publisher sends on `media.<type>`, and how each is run.

Priorities are the Node worker's (images 2, video and voice notes 1): a priority of 2 or more
goes to media_high, which `rqworker media` drains before media.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import Field

from supworker.jobtypes import Domain, JobType, QueueSpec, WorkerKind, declare
from supworker.payloads import Message, StorageKey


class MediaJob(Message):
    type: Literal["image", "video", "audio"]
    s3Key: StorageKey
    userId: UUID
    messageId: UUID
    originalName: Annotated[str, Field(max_length=255)] | None = None


_QUEUES: dict[str, Any] = {"queue": "media", "high_queue": "media_high"}

declare(
    WorkerKind("media", (QueueSpec("media_high", 60), QueueSpec("media", 60))),
    Domain("media", MediaJob, rabbit_queue="media", adoptable=True),
    JobType("media.image", priority=2, timeout=60, **_QUEUES),
    JobType("media.video", priority=1, timeout=300, **_QUEUES),
    JobType("media.audio", priority=1, timeout=60, **_QUEUES),
)

"""What publishers may send: one declarative schema per job domain, in their camelCase.

`parse_message` turns a RabbitMQ body into a validated job or raises InvalidMessage whose
reason names every bad field, so an operator reading a dead letter knows what to fix.
Unknown extra fields are ignored, so publishers can add fields before supworker reads them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, ValidationError, model_validator

from supworker.env import E164_RE
from supworker.policy import CLEANUP_TYPES

_JOB_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _job_id(value: str) -> str:
    if not _JOB_ID_RE.match(value):
        raise ValueError("must be 1-128 letters, digits, '.', '_', ':' or '-'")
    return value


def _storage_key(value: str) -> str:
    """An object key inside the media store: relative, no way out of it, nothing invisible."""
    if _CONTROL_RE.search(value):
        raise ValueError("must not contain control characters")
    if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        raise ValueError("must be a relative key, not an absolute path")
    if "\\" in value:
        raise ValueError("must use '/' as separator")
    if any(part in ("..", ".") for part in value.split("/")):
        raise ValueError("must not contain '.' or '..' path segments")
    if "//" in value or value.endswith("/"):
        raise ValueError("must not contain empty path segments")
    return value


def _e164(value: str) -> str:
    if not E164_RE.match(value):
        raise ValueError("must be an E.164 number such as +14155550100")
    return value


JobId = Annotated[str, AfterValidator(_job_id)]
StorageKey = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_storage_key)]
Phone = Annotated[str, AfterValidator(_e164)]
ShortText = Annotated[str, Field(max_length=256)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    jobId: JobId | None = None
    timestamp: datetime | None = None  # epoch milliseconds (as the Node publishers send) or ISO 8601
    priority: Literal["low", "normal", "high"] | None = None


class MediaJob(_Message):
    type: Literal["image", "video", "audio"]
    s3Key: StorageKey
    userId: UUID
    messageId: UUID
    originalName: Annotated[str, Field(max_length=255)] | None = None


class NotificationJob(_Message):
    type: Literal["push", "email", "sms"]
    userId: UUID
    title: ShortText
    body: Annotated[str, Field(max_length=4000)]
    fcmToken: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    email: EmailStr | None = None
    phoneNumber: Phone | None = None
    # FCM data values are strings; FCM caps the whole payload at 4 KB.
    data: Annotated[dict[str, str], Field(max_length=100)] | None = None
    # Multicast: the active devices of every listed user.
    userIds: Annotated[list[UUID], Field(min_length=1, max_length=1000)] | None = None
    # The code of an SMS whose data.kind is "otp" or "2fa"; sealed like OtpJob.otp.
    otp: Annotated[str, Field(min_length=4, max_length=32)] | None = None

    @model_validator(mode="after")
    def _recipient_for_channel(self) -> NotificationJob:
        if self.type == "email" and not self.email:
            raise ValueError("an email notification needs 'email'")
        if self.type == "sms" and not self.phoneNumber:
            raise ValueError("an sms notification needs 'phoneNumber'")
        if self.type == "sms" and (self.data or {}).get("kind") in ("otp", "2fa") and not self.otp:
            raise ValueError("an otp or 2fa sms needs 'otp'")
        return self


class CleanupJob(_Message):
    type: Literal[CLEANUP_TYPES]  # type: ignore[valid-type]
    data: dict[str, Any] | None = None


class OtpMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    userName: ShortText | None = None
    expiryMinutes: Annotated[int, Field(ge=1, le=1440)] | None = None


class OtpJob(_Message):
    """The LMS OTP worker's format, on the `service_send_otp` queue."""

    email: EmailStr
    otp: Annotated[str, Field(min_length=4, max_length=32)]
    retryCount: Annotated[int, Field(ge=0, le=100)] = 0
    metadata: OtpMetadata | None = None


SCHEMAS: dict[str, type[_Message]] = {
    "media": MediaJob,
    "notification": NotificationJob,
    "cleanup": CleanupJob,
    "otp": OtpJob,
}
_ENVELOPE_FIELDS = {"jobId", "timestamp", "priority", "retryCount"}


class InvalidMessage(Exception):
    """A message that can never become a job; `reason` says why, for the dead letter."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ParsedJob:
    job_type: str
    payload: dict[str, Any]
    job_id: str | None
    created_at: float | None
    priority: str | None
    retries_done: int


def describe_errors(error: ValidationError) -> str:
    """Every problem pydantic found, as `field: what is wrong; …`."""
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "message"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def parse_message(domain: str, body: bytes, routing_key: str = "", max_bytes: int = 256 * 1024) -> ParsedJob:
    """Validate one message body for `domain` (media, notification, cleanup or otp)."""
    if len(body) > max_bytes:
        raise InvalidMessage(f"message is {len(body)} bytes, larger than the {max_bytes}-byte limit")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidMessage(f"message is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"message is a JSON {type(data).__name__}, not an object")
    try:
        job = SCHEMAS[domain].model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid {domain} job: {describe_errors(exc)}") from None

    kind = getattr(job, "type", "email")
    key_parts = routing_key.split(".")
    if domain != "otp" and len(key_parts) > 1 and key_parts[1] != kind:
        raise InvalidMessage(f"routing key {routing_key!r} does not match the payload's type {kind!r}")
    return ParsedJob(
        job_type=f"{domain}.{kind}",
        payload=job.model_dump(mode="json", exclude_none=True, exclude=_ENVELOPE_FIELDS),
        job_id=job.jobId,
        created_at=job.timestamp.timestamp() if job.timestamp else None,
        priority=job.priority,
        retries_done=getattr(job, "retryCount", 0),
    )

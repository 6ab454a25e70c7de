"""The notification job types: push, e-mail and SMS (`notification.<type>`), the LMS OTP
e-mail (`service_send_otp`), and device registrations (`device.<action>`).

Small and frequent, they are micro-batched: one RQ job carries up to `batch_size` items,
while retries, idempotency and dead letters still hold item by item.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from notifications.config import ANDROID_CHANNEL_ID, ANDROID_CHANNEL_ID_RULE
from supworker.jobtypes import Domain, JobType, QueueSpec, WorkerKind, declare
from supworker.payloads import MAX_CLOCK_SKEW, DeviceToken, Message, Moment, Phone, ShortText

MAX_BADGE = 1_000_000


def _android_channel_id(value: str) -> str:
    if not ANDROID_CHANNEL_ID.fullmatch(value):
        raise ValueError(ANDROID_CHANNEL_ID_RULE)
    return value


class NotificationJob(Message):
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
    # A push's chat options (docs/notifications.md#chats-sound-and-mute): the iOS badge count,
    # the Android channel, and whether it ignores the user's mute of its chat (data.chatId).
    badge: Annotated[int, Field(ge=0, le=MAX_BADGE, strict=True)] | None = None
    androidChannelId: Annotated[str, AfterValidator(_android_channel_id)] | None = None
    urgent: Annotated[bool, Field(strict=True)] | None = None

    @model_validator(mode="after")
    def _recipient_for_channel(self) -> NotificationJob:
        if self.type == "email" and not self.email:
            raise ValueError("an email notification needs 'email'")
        if self.type == "sms" and not self.phoneNumber:
            raise ValueError("an sms notification needs 'phoneNumber'")
        if self.type == "sms" and (self.data or {}).get("kind") in ("otp", "2fa") and not self.otp:
            raise ValueError("an otp or 2fa sms needs 'otp'")
        if self.type == "push" and not (self.title or self.body):
            for name in ("badge", "androidChannelId"):
                if getattr(self, name) is not None:
                    raise ValueError(f"'{name}' needs a title or body: a data-only push shows no notification")
        return self


class DeviceJob(Message):
    """The messenger says which FCM token reaches which user; the action is the routing key's
    second part (device.register, device.unregister). See notifications/devices.py."""

    type: Literal["register", "unregister"]
    userId: UUID
    fcmToken: DeviceToken
    platform: Literal["ios", "android", "web"]
    deviceId: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    # When the messenger made the change: it orders the messages about one token. `timestamp`
    # stands in for it when absent.
    at: Moment

    @model_validator(mode="before")
    @classmethod
    def _at_from_timestamp(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("at") is None and data.get("timestamp") is not None:
            return {**data, "at": data["timestamp"]}
        return data

    @field_validator("at")
    @classmethod
    def _not_ahead(cls, value: datetime) -> datetime:
        if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError(f"is more than {MAX_CLOCK_SKEW.seconds // 60} minutes ahead of this server's clock")
        return value


class OtpMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    userName: ShortText | None = None
    expiryMinutes: Annotated[int, Field(ge=1, le=1440)] | None = None


class OtpJob(Message):
    """The LMS OTP worker's format, on the `service_send_otp` queue."""

    email: EmailStr
    otp: Annotated[str, Field(min_length=4, max_length=32)]
    retryCount: Annotated[int, Field(ge=0, le=100)] = 0
    metadata: OtpMetadata | None = None


_QUEUES: dict[str, Any] = {"queue": "notifications", "high_queue": "notifications_high"}


def _users(payload: Mapping[str, Any]) -> int:
    """A multicast push is as much work as its users' pushes: 500 users fill an RQ job, as 500
    single pushes do, so a backlog of 1,000-user messages never makes a job of a million pushes."""
    return len(payload.get("userIds") or ()) or 1


declare(
    WorkerKind("notifications", (QueueSpec("notifications_high", 30), QueueSpec("notifications", 30))),
    Domain("notification", NotificationJob, rabbit_queue="notifications", sealed=("otp", "fcmToken", "phoneNumber"),
           adoptable=True),
    Domain("otp", OtpJob, rabbit_queue=None, sealed=("otp",), only_type="email"),
    Domain("device", DeviceJob, rabbit_queue="devices", sealed=("fcmToken",), typed_by_routing_key=True),
    JobType("notification.push", priority=3, timeout=30, batch_size=500, weight=_users, **_QUEUES),
    JobType("notification.email", priority=1, timeout=30, batch_size=50, **_QUEUES),
    JobType("notification.sms", priority=1, timeout=30, batch_size=50, **_QUEUES),
    # A person is waiting at a sign-in screen for this code: it goes with the pushes.
    JobType("otp.email", priority=3, timeout=30, batch_size=50, **_QUEUES),
    # With the pushes, first in first out: a device registered before a push is known to it.
    JobType("device.register", priority=3, timeout=30, batch_size=100, **_QUEUES),
    JobType("device.unregister", priority=3, timeout=30, batch_size=100, **_QUEUES),
)  # fmt: skip

"""The messenger's tables that supworker reads and maintains, as the Node API created them.

The schema is the seed's (supworker.messenger_ddl): `TIMESTAMP` columns without time zone,
ids without a default, nullable times. supworker adds only columns that have a constant
default (so the API's inserts, which name only the seed's columns, keep working) and indexes
built concurrently (supworker/adoption.py). Table names are the messenger's own.

The last three, websocket connections and the statistics the cleanups aggregate, are not in the
seed: supworker created them as ordinary Django tables (their first migrations are in the
cleanup app, which held them until they moved here).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from supworker.models.fields import MessengerTimestamp, created_at, seed_id, uuid_pk


def seed_created_at() -> MessengerTimestamp:
    """`created_at TIMESTAMP DEFAULT NOW()`. Tables that cleanups walk by age index (created_at, id),
    so a batch can resume after the last row it deleted (keyset pagination)."""
    return MessengerTimestamp(null=True, db_default=Now(), editable=False)


class MediaStatus(models.TextChoices):
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class Message(models.Model):
    id = seed_id()
    sender_id = models.UUIDField()
    chat_id = models.UUIDField()
    content = models.TextField(null=True, blank=True)
    media_url = models.TextField(null=True, blank=True)
    thumbnail_url = models.TextField(null=True, blank=True)
    media_metadata = models.JSONField(null=True, blank=True)
    # Null for a text message; set once media processing is asked for.
    media_status = models.CharField(max_length=16, choices=MediaStatus.choices, null=True, blank=True)
    media_error = models.TextField(blank=True, db_default="", default="")
    created_at = seed_created_at()
    updated_at = MessengerTimestamp(null=True, auto_now=True, db_default=Now())
    deleted_at = MessengerTimestamp(null=True, blank=True)

    class Meta:
        db_table = "messages"
        indexes = [
            models.Index(fields=["created_at", "id"], name="messages_created_id_idx"),
            models.Index(fields=["chat_id", "created_at"], name="messages_chat_created_idx"),
            models.Index(fields=["sender_id"], name="messages_sender_idx"),
            # Only the few messages whose media is in flight or failed; keeps the index small.
            models.Index(
                fields=["media_status"],
                name="messages_media_pending_idx",
                condition=Q(media_status__in=["queued", "processing", "failed"]),
            ),
            # The orphaned-media scan asks "does any message point at this object?".
            models.Index(fields=["media_url"], name="messages_media_url_idx", condition=Q(media_url__isnull=False)),
            models.Index(
                fields=["thumbnail_url"], name="messages_thumbnail_url_idx", condition=Q(thumbnail_url__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"message {self.id}"


class Story(models.Model):
    id = seed_id()
    user_id = models.UUIDField()
    media_url = models.TextField(null=True, blank=True)
    thumbnail_url = models.TextField(null=True, blank=True)
    created_at = seed_created_at()
    deleted_at = MessengerTimestamp(null=True, blank=True)

    class Meta:
        db_table = "stories"
        verbose_name_plural = "stories"
        indexes = [
            models.Index(fields=["user_id"], name="stories_user_idx"),
            models.Index(fields=["created_at", "id"], name="stories_created_id_idx"),
            models.Index(
                fields=["deleted_at", "id"], name="stories_deleted_id_idx", condition=Q(deleted_at__isnull=False)
            ),
            models.Index(fields=["media_url"], name="stories_media_url_idx", condition=Q(media_url__isnull=False)),
            models.Index(
                fields=["thumbnail_url"], name="stories_thumbnail_url_idx", condition=Q(thumbnail_url__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"story {self.id}"


class UserSession(models.Model):
    id = seed_id()
    user_id = models.UUIDField()
    device_id = models.TextField(null=True, blank=True)
    last_active_at = MessengerTimestamp(null=True, blank=True)
    is_active = models.BooleanField(null=True, default=True, db_default=True)
    created_at = seed_created_at()

    class Meta:
        db_table = "user_sessions"
        indexes = [
            models.Index(fields=["user_id"], name="user_sessions_user_idx"),
            models.Index(fields=["last_active_at", "id"], name="user_sessions_active_id_idx"),
            models.Index(
                fields=["created_at", "id"], name="user_sessions_never_id_idx", condition=Q(last_active_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"session {self.id}"


class UserPrekey(models.Model):
    """A Signal one-time prekey: the public half only; private keys never leave the device."""

    id = seed_id()
    user_id = models.UUIDField()
    prekey_id = models.IntegerField()
    public_key = models.TextField()
    used_at = MessengerTimestamp(null=True, blank=True)
    created_at = seed_created_at()

    class Meta:
        db_table = "user_prekeys"
        constraints = [
            models.UniqueConstraint(fields=["user_id", "prekey_id"], name="user_prekeys_user_id_prekey_id_key")
        ]
        indexes = [
            models.Index(fields=["used_at", "id"], name="user_prekeys_used_id_idx", condition=Q(used_at__isnull=False)),
            # Counting a user's unused stock is the hot query of prekey replenishment.
            models.Index(fields=["user_id"], name="user_prekeys_unused_idx", condition=Q(used_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"prekey {self.prekey_id} of {self.user_id}"


class TemporaryFile(models.Model):
    id = seed_id()
    file_path = models.TextField()
    created_at = seed_created_at()

    class Meta:
        db_table = "temporary_files"
        indexes = [models.Index(fields=["created_at", "id"], name="temporary_files_created_id_idx")]

    def __str__(self) -> str:
        return self.file_path


class WebsocketConnection(models.Model):
    """One open websocket of a device; the gateway refreshes last_heartbeat_at while it lives."""

    id = uuid_pk()
    user_id = models.UUIDField(db_index=True)
    device_id = models.TextField(null=True, blank=True)
    session_id = models.UUIDField(null=True, blank=True, db_index=True, help_text="user_sessions.id")
    server_id = models.CharField(max_length=128, help_text="the gateway process holding the socket")
    connected_at = created_at()
    last_heartbeat_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "websocket_connections"
        indexes = [models.Index(fields=["last_heartbeat_at", "id"], name="websockets_heartbeat_id_idx")]

    def __str__(self) -> str:
        return f"{self.user_id} on {self.server_id}"


class UserStatistics(models.Model):
    user_id = models.UUIDField(primary_key=True)
    messages_sent = models.PositiveBigIntegerField(default=0)
    stories = models.PositiveIntegerField(default=0)
    active_sessions = models.PositiveIntegerField(default=0)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "user_statistics"
        verbose_name_plural = "user statistics"

    def __str__(self) -> str:
        return str(self.user_id)


class GlobalStatistics(models.Model):
    """One row per aggregation run: the whole service at that moment."""

    id = models.BigAutoField(primary_key=True)
    computed_at = models.DateTimeField(db_default=Now(), db_index=True)
    users = models.PositiveBigIntegerField()
    messages = models.PositiveBigIntegerField()
    messages_last_24h = models.PositiveBigIntegerField()
    stories = models.PositiveBigIntegerField()
    active_sessions = models.PositiveBigIntegerField()

    class Meta:
        db_table = "global_statistics"
        verbose_name_plural = "global statistics"

    def __str__(self) -> str:
        return f"statistics of {self.computed_at:%Y-%m-%d %H:%M}"

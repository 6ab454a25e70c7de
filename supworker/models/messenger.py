"""The messenger's tables that supworker reads and maintains.

The messenger API writes these rows too, so every column the API may omit has a database
default (`db_default`), not only a Python one: an INSERT from Node gets the same values as one
from Django. Table names are the messenger's own.
"""

from __future__ import annotations

import uuid

from django.contrib.postgres.functions import RandomUUID
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


def uuid_pk() -> models.UUIDField:
    return models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=RandomUUID(), editable=False)


def created_at(index: bool = True) -> models.DateTimeField:
    """Creation time, set by the database. Tables that cleanups walk by age index (created_at, id)
    instead, so a batch can resume after the last row it deleted (keyset pagination)."""
    return models.DateTimeField(db_default=Now(), db_index=index, editable=False)


class MediaStatus(models.TextChoices):
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class Message(models.Model):
    id = uuid_pk()
    sender_id = models.UUIDField()
    chat_id = models.UUIDField()
    content = models.TextField(null=True, blank=True)
    media_url = models.TextField(null=True, blank=True)
    thumbnail_url = models.TextField(null=True, blank=True)
    media_metadata = models.JSONField(null=True, blank=True)
    # Null for a text message; set once media processing is asked for.
    media_status = models.CharField(max_length=16, choices=MediaStatus.choices, null=True, blank=True)
    media_error = models.TextField(blank=True, db_default="", default="")
    created_at = created_at(index=False)
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())
    deleted_at = models.DateTimeField(null=True, blank=True)

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
    id = uuid_pk()
    user_id = models.UUIDField(db_index=True)
    media_url = models.TextField(null=True, blank=True)
    thumbnail_url = models.TextField(null=True, blank=True)
    created_at = created_at(index=False)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "stories"
        verbose_name_plural = "stories"
        indexes = [
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
    id = uuid_pk()
    user_id = models.UUIDField(db_index=True)
    device_id = models.TextField(null=True, blank=True)
    last_active_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True, db_default=True)
    created_at = created_at(index=False)

    class Meta:
        db_table = "user_sessions"
        indexes = [
            models.Index(fields=["last_active_at", "id"], name="user_sessions_active_id_idx"),
            models.Index(
                fields=["created_at", "id"], name="user_sessions_never_id_idx", condition=Q(last_active_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"session {self.id}"


class UserPrekey(models.Model):
    """A Signal one-time prekey: the public half only; private keys never leave the device."""

    id = uuid_pk()
    user_id = models.UUIDField()
    prekey_id = models.IntegerField()
    public_key = models.TextField()
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = created_at(index=False)

    class Meta:
        db_table = "user_prekeys"
        constraints = [models.UniqueConstraint(fields=["user_id", "prekey_id"], name="user_prekeys_user_prekey_uniq")]
        indexes = [
            models.Index(fields=["used_at", "id"], name="user_prekeys_used_id_idx", condition=Q(used_at__isnull=False)),
            # Counting a user's unused stock is the hot query of prekey replenishment.
            models.Index(fields=["user_id"], name="user_prekeys_unused_idx", condition=Q(used_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"prekey {self.prekey_id} of {self.user_id}"


class TemporaryFile(models.Model):
    id = uuid_pk()
    file_path = models.TextField()
    created_at = created_at(index=False)

    class Meta:
        db_table = "temporary_files"
        indexes = [models.Index(fields=["created_at", "id"], name="temporary_files_created_id_idx")]

    def __str__(self) -> str:
        return self.file_path

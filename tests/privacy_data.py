"""A user with a row in every table supworker holds of users, and files in the store: what the
privacy tests build and check (their fixtures are in tests/privacy_fixtures.py)."""

from __future__ import annotations

import gzip
import json
import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from notifications.models import Device, MutedChat, Notification
from supworker.models import (
    DeadLetter,
    JobRun,
    Message,
    Story,
    UserPrekey,
    UserSession,
    UserStatistics,
    WebsocketConnection,
)

CHAT = uuid.uuid4()


def stored(key: str, content: bytes = b"data") -> str:
    assert default_storage.save(key, ContentFile(content)) == key
    return key


def archive(key: str, rows: list[dict]) -> str:
    lines = "".join(json.dumps(row) + "\n" for row in rows).encode()
    return stored(key, gzip.compress(lines))


def archived(key: str) -> list[dict]:
    with default_storage.open(key, "rb") as raw:
        return [json.loads(line) for line in gzip.decompress(raw.read()).splitlines()]


def archive_row(sender: uuid.UUID) -> dict:
    return {"id": str(uuid.uuid4()), "sender_id": str(sender), "chat_id": str(CHAT), "content": "old",
            "created_at": "2025-01-01 10:00:00"}  # fmt: skip


def everything_of(user: uuid.UUID, tag: str) -> dict:
    """A user with a row in every table supworker holds of users, and files in the store."""
    media = stored(f"media/{tag}/photo.jpg")
    thumb = stored(f"media/{tag}/thumb.jpg")
    story_media = stored(f"stories/{tag}/story.jpg")
    messages = [
        Message.objects.create(sender_id=user, chat_id=CHAT, content=f"{tag} {n}", media_url=media if n == 0 else None,
                               thumbnail_url=default_storage.url(thumb) if n == 0 else None)
        for n in range(3)
    ]  # fmt: skip
    Story.objects.create(user_id=user, media_url=story_media)
    session = UserSession.objects.create(user_id=user, device_id=f"{tag}-phone")
    UserPrekey.objects.create(user_id=user, prekey_id=1, public_key=f"{tag}-key")
    WebsocketConnection.objects.create(user_id=user, session_id=session.id, server_id="gw-1")
    UserStatistics.objects.create(user_id=user, messages_sent=3)
    Notification.objects.create(user_id=user, type="push", title="hi", body="there", success=True)
    Device.objects.create(user_id=user, registration_id=f"{tag}-token", type="android")
    MutedChat.objects.create(user_id=user, chat_id=CHAT, mode="silent")
    JobRun.objects.create(job_id=f"{tag}-push", job_type="notification.push", queue="notifications",
                          payload={"type": "push", "userId": str(user), "title": "hi"}, result={"to": tag})  # fmt: skip
    names_user = {"type": "image", "userId": str(user)}
    DeadLetter.objects.create(job_id=f"{tag}-image", job_type="media.image", source="worker", error="boom",
                              payload=names_user, envelope={"payload": names_user})  # fmt: skip
    return {"messages": messages, "files": [media, thumb, story_media]}


def table_counts(user: uuid.UUID) -> dict[str, int]:
    return {
        "messages": Message.objects.filter(sender_id=user).count(),
        "stories": Story.objects.filter(user_id=user).count(),
        "user_sessions": UserSession.objects.filter(user_id=user).count(),
        "user_prekeys": UserPrekey.objects.filter(user_id=user).count(),
        "websocket_connections": WebsocketConnection.objects.filter(user_id=user).count(),
        "user_statistics": UserStatistics.objects.filter(user_id=user).count(),
        "notifications": Notification.objects.filter(user_id=user).count(),
        "fcm_devices": Device.objects.filter(user_id=user).count(),
        "muted_chats": MutedChat.objects.filter(user_id=user).count(),
        "job_runs": JobRun.objects.filter(payload__userId=str(user)).count(),
        "dead_letters": DeadLetter.objects.filter(payload__userId=str(user)).count(),
    }


ONE_OF_EACH = {"messages": 3, "stories": 1, "user_sessions": 1, "user_prekeys": 1, "websocket_connections": 1,
               "user_statistics": 1, "notifications": 1, "fcm_devices": 1, "muted_chats": 1, "job_runs": 1,
               "dead_letters": 1}  # fmt: skip
NOTHING = dict.fromkeys(ONE_OF_EACH, 0)

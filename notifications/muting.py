"""Which pushes a user muted: the messenger's `muted_chats` (contract in docs/notifications.md#muted-chats).

A message push (a title or body) that names its chat (`data.chatId`) goes to each of its users
as that user's row says: without sound (`silent`), not at all (`skip`), or as usual (no row, or
one whose `until` has passed). Urgent pushes ignore mutes, and so do data-only pushes: the app
handles those silently anyway, and they carry what it needs (new prekeys, sync).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Q
from django.db.models.functions import Now

from notifications.models import SKIPPED_PREFIX, MutedChat
from supworker.envelope import Envelope

# A push whose `urgent` is absent is urgent when its data.kind is one of these: someone waits for it.
URGENT_KINDS = frozenset({"call", "otp", "2fa"})


@dataclass(frozen=True)
class Mute:
    mode: str  # MuteMode: silent or skip
    until: datetime | None

    def reason(self) -> str:
        """What the notification log says of a push not sent because of it."""
        ends = f" until {self.until.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if self.until else ""
        return f"{SKIPPED_PREFIX}the user muted this chat{ends}"


Mutes = dict[tuple[str, uuid.UUID], Mute]  # (user id, chat id) -> the mute in force


def urgent(payload: dict[str, Any]) -> bool:
    if payload.get("urgent") is not None:
        return bool(payload["urgent"])
    return (payload.get("data") or {}).get("kind") in URGENT_KINDS


def chat_id(payload: dict[str, Any]) -> uuid.UUID | None:
    """The chat a message push may be muted by: its data.chatId, when that is a chat's UUID
    (muted_chats holds nothing else); None when no mute can apply to it."""
    if not (payload.get("title") or payload.get("body")) or urgent(payload):
        return None
    try:
        return uuid.UUID(str((payload.get("data") or {}).get("chatId") or ""))
    except ValueError:
        return None


def in_force(envelopes: list[Envelope], users_of: dict[str, list[str]]) -> Mutes:
    """The mutes that apply to a batch, read in one query. `users_of`: job id -> its users."""
    chats = {e.job_id: chat for e in envelopes if (chat := chat_id(e.payload)) is not None}
    if not chats:
        return {}
    users = {user for job_id in chats for user in users_of[job_id]}
    rows = MutedChat.objects.filter(user_id__in=users, chat_id__in=set(chats.values())).filter(
        Q(until__isnull=True) | Q(until__gt=Now())
    )
    return {(str(row.user_id), row.chat_id): Mute(row.mode, row.until) for row in rows}


def mute_for(envelope: Envelope, user_id: str, mutes: Mutes) -> Mute | None:
    """The mute that applies to this push's copies for this user: each user's own, even in a multicast."""
    chat = chat_id(envelope.payload)
    return None if chat is None else mutes.get((user_id, chat))

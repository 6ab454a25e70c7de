"""What one push looks like to FCM, APNs, Android and browsers (docs/notifications.md#push-fcm).

- A message push (a title or body) plays the default sound (APNs `aps.sound`, Android
  `notification.sound`; on Android 8 and later the channel's sound), at high priority.
  Sent for a chat the user muted in silent mode, it has no sound: iOS gets it as `passive`
  (listed, no sound, screen left dark), the web as `silent`, Android in the channel
  FCM_ANDROID_SILENT_CHANNEL_ID names when set.
- A push naming its chat (`data.chatId`) is grouped with the chat's others on iOS
  (`aps.thread-id`); an Android app groups them itself from the chat id in `data`, in the
  channel `androidChannelId` names (else the app's default channel). `badge` sets `aps.badge`.
- A data-only push (empty title and body, e.g. prekeys_low) has no notification block and no
  sound: the app handles it silently (APNs `content-available`, Android priority normal).

Every copy of a job carries the same deduplication key (`dedupe_key`, from the job id) as the
APNs collapse id, the Android and web notification tag and the Web Push Topic: a copy sent again
after a worker died replaces the first one on the device (notifications/ledger.py). A chat
therefore cannot use those fields to replace its earlier notifications.
"""

from __future__ import annotations

import hashlib
import warnings
from datetime import timedelta

from django.conf import settings
from firebase_admin import messaging

from supworker.envelope import Envelope

DEFAULT_SOUND = "default"
# iOS 15+: added to the notification list without sound or lighting the screen.
PASSIVE = {"interruption-level": "passive"}


def dedupe_key(job_id: str) -> str:
    """The same for every send of a job: 32 characters, within APNs' 64 bytes and Web Push's
    32 URL-safe characters for a Topic."""
    return hashlib.sha256(job_id.encode()).hexdigest()[:32]


def build_message(envelope: Envelope, token: str, silent: bool = False) -> messaging.Message:
    """The push of `envelope` to one device; `silent`: its user muted the chat in silent mode."""
    # firebase-admin 7.7 deprecates Message.token in favour of Firebase installation ids (fid),
    # but fcm-django stores FCM registration tokens, which the v1 API still takes as `token`.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Message.token is deprecated", category=DeprecationWarning)
        return _build_message(envelope, token, silent)


def _build_message(envelope: Envelope, token: str, silent: bool) -> messaging.Message:
    payload = envelope.payload
    data = {str(k): str(v) for k, v in (payload.get("data") or {}).items()}  # FCM data values are strings
    title, body = payload.get("title") or "", payload.get("body") or ""
    ttl = timedelta(seconds=settings.CONFIG.notifications.fcm_ttl_s)
    key = dedupe_key(envelope.job_id)
    if not title and not body:
        # Data-only (e.g. prekeys_low): the app handles it silently, no notification block.
        return messaging.Message(
            token=token,
            data=data,
            android=messaging.AndroidConfig(priority="normal", ttl=ttl),
            apns=messaging.APNSConfig(
                headers={"apns-priority": "5", "apns-push-type": "background", "apns-collapse-id": key},
                payload=messaging.APNSPayload(aps=messaging.Aps(content_available=True)),
            ),
            webpush=messaging.WebpushConfig(headers={"Topic": key}),
        )
    sound = None if silent else DEFAULT_SOUND
    channel = payload.get("androidChannelId")
    if silent:
        channel = settings.CONFIG.notifications.fcm_android_silent_channel_id or channel
    aps = messaging.Aps(
        sound=sound,
        badge=payload.get("badge"),
        thread_id=data.get("chatId") or None,
        custom_data=PASSIVE if silent else None,
    )
    return messaging.Message(
        token=token,
        data=data or None,
        notification=messaging.Notification(title=title or None, body=body or None),
        android=messaging.AndroidConfig(
            priority="high",
            ttl=ttl,
            notification=messaging.AndroidNotification(tag=key, sound=sound, channel_id=channel or None),
        ),
        apns=messaging.APNSConfig(
            headers={"apns-priority": "10", "apns-push-type": "alert", "apns-collapse-id": key},
            payload=messaging.APNSPayload(aps=aps),
        ),
        webpush=messaging.WebpushConfig(
            headers={"Topic": key}, notification=messaging.WebpushNotification(tag=key, silent=silent or None)
        ),
    )

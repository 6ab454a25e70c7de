"""Which FCM token reaches which user: the messenger's device.register and device.unregister.

The messenger publishes `{userId, fcmToken, platform, deviceId?, at}` on sup_exchange with the
routing key device.register or device.unregister (validated by supworker/payloads.py); the job
runs on the notification workers, and a push to `userId` then goes to the user's active rows
in fcm_devices (notifications/push.py).

Ordering. Messages about one token can arrive in any order (several publishers, a retried or
redelivered job), so each carries `at`, when the messenger made the change, and the token's
row keeps the `at` of the last change applied to it (`changed_at`). The newest message about a
token decides its state, whichever user or device it names, so every arrival order ends alike:

- register: the token belongs to `userId` (on `deviceId`, with `platform`) and is active. A
  token another user or device held moves (a token is unique). Applied if newer than the row.
- unregister: the token gets no more pushes. Its row stays, inactive, keeping `at`, so that an
  older register arriving later cannot bring it back. Applied if newer than the row, or as new
  while the row is active: a register and an unregister made at the same instant end
  unregistered, whichever arrives first.
- FCM's own verdict on a token (UNREGISTERED and the like, see push.py) deactivates its row
  without touching `changed_at`: a newer register brings it back, a redelivered copy of the
  register already applied does not.

Each message is one INSERT ... ON CONFLICT ... WHERE statement, atomic in PostgreSQL: two
workers applying messages about one token at once still end with the newer one.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import connection

from notifications.push import token_reference
from supworker.envelope import Envelope

logger = logging.getLogger(__name__)

_INSERT = """
    INSERT INTO fcm_devices AS d (registration_id, user_id, type, device_id, active, changed_at, date_created)
    VALUES (%(token)s, %(user)s, %(platform)s, %(device)s, %(active)s, %(at)s, now())
    ON CONFLICT (registration_id) DO UPDATE
"""
REGISTER_SQL = (
    _INSERT
    + """
    SET user_id = EXCLUDED.user_id, type = EXCLUDED.type, device_id = EXCLUDED.device_id,
        active = true, changed_at = EXCLUDED.changed_at
    WHERE d.changed_at IS NULL OR d.changed_at < EXCLUDED.changed_at
    RETURNING d.id
"""
)
UNREGISTER_SQL = (
    _INSERT
    + """
    SET active = false, changed_at = EXCLUDED.changed_at
    WHERE d.changed_at IS NULL OR d.changed_at < EXCLUDED.changed_at
        OR (d.changed_at = EXCLUDED.changed_at AND d.active)
    RETURNING d.id
"""
)


def register(envelope: Envelope) -> dict[str, Any]:
    return _apply(envelope, REGISTER_SQL, active=True)


def unregister(envelope: Envelope) -> dict[str, Any]:
    return _apply(envelope, UNREGISTER_SQL, active=False)


def _apply(envelope: Envelope, sql: str, active: bool) -> dict[str, Any]:
    payload = envelope.payload
    token = envelope.reveal("fcmToken")
    params = {
        "token": token,
        "user": payload["userId"],
        "platform": payload["platform"],
        "device": payload.get("deviceId"),
        "active": active,
        "at": datetime.fromisoformat(payload["at"]),
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        applied = cursor.fetchone() is not None
    device = token_reference(token)  # what logs and results may show of a token
    if not applied:
        logger.info("%s of %s at %s ignored: a newer change was applied", envelope.job_type, device, payload["at"])
    return {"applied": applied, "device": device}

"""Field shapes shared by supworker's models: its own tables' ids and times, and the messenger's timestamps."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.contrib.postgres.functions import RandomUUID
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone


def uuid_pk() -> models.UUIDField:
    """The id of a table supworker owns: random, filled by the database when an insert omits it."""
    return models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=RandomUUID(), editable=False)


def created_at(index: bool = True) -> models.DateTimeField:
    """Creation time of a row in a table supworker owns (timestamptz), set by the database."""
    return models.DateTimeField(db_default=Now(), db_index=index, editable=False)


def seed_id() -> models.UUIDField:
    """The id of a messenger table: `UUID PRIMARY KEY` with no default, as the seed schema has it.

    The Node API and supworker both name the id in every insert."""
    return models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)


class MessengerTimestamp(models.DateTimeField):
    """A `TIMESTAMP` (without time zone) column of the messenger's schema, kept as the API made it.

    Such a column holds local times of the zone MESSENGER_DB_TIME_ZONE names (UTC unless the
    Node API's sessions run in another zone). supworker's database sessions run in that zone
    (settings: DATABASES TIME_ZONE), so PostgreSQL converts the aware values we write, and the
    timestamptz values we compare with, exactly as it does for the API. Read back, a value is a
    naive local time: this field makes it aware in that zone. A database upgraded from an earlier
    supworker keeps its `timestamptz` columns; their values arrive aware and pass through.
    """

    description = "Date and time in the messenger's time zone (PostgreSQL timestamp without time zone)"

    def db_type(self, connection: Any) -> str:
        return "timestamp"

    def from_db_value(self, value: datetime | None, expression: Any, connection: Any) -> datetime | None:
        if value is None or timezone.is_aware(value):
            return value
        return timezone.make_aware(value, connection.timezone)

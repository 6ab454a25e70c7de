"""The privacy job types the runner calls: thin, the work is in erasure.py and export.py."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from privacy import erasure, export
from supworker.envelope import Envelope
from supworker.handlers import handles


@handles("user.erase")
def erase_user(envelope: Envelope) -> dict[str, Any]:
    return erasure.erase(UUID(envelope.payload["userId"]), envelope.job_id)


@handles("user.export")
def export_user(envelope: Envelope) -> dict[str, Any]:
    return export.export(UUID(envelope.payload["userId"]), envelope.job_id, envelope.payload.get("email"))


@handles("user.expire_exports")
def expire_exports(envelope: Envelope) -> dict[str, Any]:
    return {"counts": export.expire()}

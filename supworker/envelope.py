"""The job envelope: what every job carries from the consumer through RQ to its handler.

Secret payload fields (OTP codes, push tokens, phone numbers) are sealed with Fernet under a
key derived from the Django secret key before the envelope leaves the consumer, so neither
Redis (RQ job data, failed registry) nor PostgreSQL (job records, dead letters) ever holds
them in clear. A handler calls `envelope.reveal(name)` at the moment it needs the value.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

SEALED_FIELDS = ("otp", "fcmToken", "phoneNumber")
SEAL_PREFIX = "sealed:v1:"


@lru_cache(maxsize=4)
def _fernet(secret_key: str) -> Fernet:
    digest = hashlib.sha256(b"supworker-envelope-seal:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal(value: str) -> str:
    return SEAL_PREFIX + _fernet(settings.SECRET_KEY).encrypt(value.encode()).decode()


def unseal(value: str) -> str:
    if not value.startswith(SEAL_PREFIX):
        return value
    try:
        return _fernet(settings.SECRET_KEY).decrypt(value[len(SEAL_PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        raise ValueError("sealed field cannot be opened: was DJANGO_SECRET_KEY changed?") from exc


@dataclass
class Envelope:
    job_id: str
    job_type: str  # "<domain>.<type>", a key of supworker.policy.POLICIES
    payload: dict[str, Any]
    attempt: int = 0  # tries already made and failed
    created_at: float = field(default_factory=time.time)  # when the publisher made it
    received_at: float = field(default_factory=time.time)  # when the consumer took it
    priority: str | None = None
    routing_key: str = ""

    @classmethod
    def sealed(cls, **fields: Any) -> Envelope:
        """An envelope whose secret payload fields are sealed."""
        envelope = cls(**fields)
        for name in SEALED_FIELDS:
            value = envelope.payload.get(name)
            if isinstance(value, str) and not value.startswith(SEAL_PREFIX):
                envelope.payload[name] = seal(value)
        return envelope

    def reveal(self, name: str) -> Any:
        value = self.payload.get(name)
        return unseal(value) if isinstance(value, str) else value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Envelope:
        return cls(**data)

    def next_attempt(self) -> Envelope:
        return Envelope(**(self.to_dict() | {"attempt": self.attempt + 1}))

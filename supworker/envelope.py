"""The job envelope: what every job carries from the consumer through RQ to its handler.

Secret payload fields (those a domain declares sealed: OTP codes, push tokens, phone numbers)
are sealed with AES-GCM under a key derived from the Django secret key before the envelope
leaves the consumer, so neither Redis (RQ job data, failed registry) nor PostgreSQL (job
records, dead letters) ever holds them in clear. A handler calls `envelope.reveal(name)` at
the moment it needs the value.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

from supworker.jobtypes import sealed_fields

SEAL_PREFIX = "sealed:v1:"


@lru_cache(maxsize=4)
def _cipher(secret_key: str) -> AESGCM:
    return AESGCM(hashlib.sha256(b"supworker-envelope-seal:" + secret_key.encode()).digest())


def seal(value: str) -> str:
    nonce = os.urandom(12)  # random 96-bit nonces: safe far beyond any volume this service sees per key
    sealed = nonce + _cipher(settings.SECRET_KEY).encrypt(nonce, value.encode(), None)
    return SEAL_PREFIX + base64.urlsafe_b64encode(sealed).decode()


def unseal(value: str) -> str:
    if not value.startswith(SEAL_PREFIX):
        return value
    try:
        raw = base64.urlsafe_b64decode(value[len(SEAL_PREFIX) :])
        return _cipher(settings.SECRET_KEY).decrypt(raw[:12], raw[12:], None).decode()
    except (InvalidTag, ValueError) as exc:
        raise ValueError("sealed field cannot be opened: was DJANGO_SECRET_KEY changed?") from exc


def seal_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of a message's payload with its secret fields sealed (those already sealed kept)."""
    sealed = dict(payload)
    for name in sealed_fields():
        value = sealed.get(name)
        if isinstance(value, str) and not value.startswith(SEAL_PREFIX):
            sealed[name] = seal(value)
    return sealed


def open_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of a message's payload with sealed secret fields opened: what `seal_fields` kept.

    Raises ValueError for a field sealed under another DJANGO_SECRET_KEY.
    """
    opened = dict(payload)
    for name in sealed_fields():
        value = opened.get(name)
        if isinstance(value, str) and value.startswith(SEAL_PREFIX):
            opened[name] = unseal(value)
    return opened


@dataclass
class Envelope:
    job_id: str
    job_type: str  # "<domain>.<type>", declared in an app's jobtypes.py
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
        for name in sealed_fields():
            value = envelope.payload.get(name)
            if isinstance(value, str) and not value.startswith(SEAL_PREFIX):
                envelope.payload[name] = seal(value)
        return envelope

    def reveal(self, name: str) -> Any:
        value = self.payload.get(name)
        return unseal(value) if isinstance(value, str) else value

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies payloads, a fifth of the consumer's time.
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Envelope:
        return cls(**data)

    def next_attempt(self) -> Envelope:
        return Envelope(**(self.to_dict() | {"attempt": self.attempt + 1}))

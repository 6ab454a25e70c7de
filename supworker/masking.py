"""Masking for what is logged or shown: codes, tokens and passwords never, addresses partly."""

from __future__ import annotations

import re
from typing import Any

from supworker.envelope import SEAL_PREFIX

HIDDEN = "***"
_SECRET_KEY_RE = re.compile(r"otp|code|token|secret|password|passwd|api_?key|authorization", re.IGNORECASE)


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else HIDDEN


def mask_phone(number: str) -> str:
    digits = re.sub(r"\D", "", number)
    return f"+***{digits[-2:]}" if len(digits) > 4 else HIDDEN


def mask_value(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return mask_payload(value)
    if isinstance(value, list):
        return [mask_value(key, item) for item in value]
    if not isinstance(value, str):
        return value
    if value.startswith(SEAL_PREFIX) or _SECRET_KEY_RE.search(key):
        return HIDDEN
    lowered = key.lower()
    if "email" in lowered:
        return mask_email(value)
    if "phone" in lowered:
        return mask_phone(value)
    return value


def mask_payload(payload: Any) -> Any:
    """A copy of `payload` that is safe to log, store in a record or show in the admin."""
    if not isinstance(payload, dict):
        return payload
    return {key: mask_value(str(key), value) for key, value in payload.items()}

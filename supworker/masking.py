"""Masking for what is logged or shown: codes, tokens and passwords never, addresses partly."""

from __future__ import annotations

import json
import re
from typing import Any

from supworker.envelope import SEAL_PREFIX, seal_fields

HIDDEN = "***"
CUT = "…"  # what stands for a part nested deeper than MAX_DEPTH
MAX_DEPTH = 40  # deeper than any valid payload (supworker.payloads.MAX_NESTING); hostile ones are cut
_SECRET_KEY_RE = re.compile(r"otp|code|token|secret|password|passwd|api_?key|authorization", re.IGNORECASE)
# In free text: a quoted "key": "value" pair (JSON, or a Python repr), an address, an E.164 number.
# Possessive quantifiers, and addresses matched only from the start of a run of their characters:
# linear time on anything, including a 256 KiB hostile message of "a.a.a.a…@".
_PAIR_RE = re.compile(r"""(?P<q>["'])(?P<key>[A-Za-z_][\w-]{0,63})(?P=q)\s*+:\s*+["'](?P<value>[^"'\\]*+)""")
_EMAIL_RE = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)++")
_PHONE_RE = re.compile(r"(?<![\w+])\+[1-9]\d{6,14}+(?!\d)")


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else HIDDEN


def mask_phone(number: str) -> str:
    digits = re.sub(r"\D", "", number)
    return f"+***{digits[-2:]}" if len(digits) > 4 else HIDDEN


def mask_value(key: str, value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        return CUT  # a rejected message may nest hundreds deep: no RecursionError here
    if isinstance(value, dict):
        return mask_payload(value, depth + 1)
    if isinstance(value, list):
        return [mask_value(key, item, depth + 1) for item in value]
    if not isinstance(value, str):
        return value
    if value.startswith(SEAL_PREFIX) or _SECRET_KEY_RE.search(key):
        return HIDDEN
    lowered = key.lower()
    if "email" in lowered:
        return mask_email(value)
    if "phone" in lowered:
        return mask_phone(value)
    return mask_text(value)


def mask_text(text: str) -> str:
    """Free text (a log line, an error, the preview of a message that is not JSON) with the values
    of secret-named fields hidden, and e-mail addresses and phone numbers masked."""
    if '"' in text or "'" in text:
        text = _PAIR_RE.sub(_mask_pair, text)
    if "@" in text:
        text = _EMAIL_RE.sub(lambda match: mask_email(match[0]), text)
    if "+" in text:
        text = _PHONE_RE.sub(lambda match: mask_phone(match[0]), text)
    return text


def _mask_pair(match: re.Match[str]) -> str:
    # The value may be cut short (a truncated message): what there is of it is masked all the same.
    return match[0][: match.start("value") - match.start()] + mask_value(match["key"], match["value"])


def mask_payload(payload: Any, depth: int = 0) -> Any:
    """A copy of `payload` that is safe to log, store in a record or show in the admin."""
    if not isinstance(payload, dict):
        return payload
    return {key: mask_value(str(key), value, depth) for key, value in payload.items()}


def dead_letter_body(body: bytes) -> bytes:
    """What the dead-letter queue may keep of a message the consumer rejected.

    A JSON object gets its secret fields sealed, as a job's envelope does (`open_fields` gives
    them back when the fixed message is republished); anything else goes through `mask_text`.
    A body with nothing to hide is kept byte for byte.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        text = body.decode("utf-8", "replace")
        masked = mask_text(text)
        return body if masked == text else masked.encode()
    if not isinstance(data, dict):
        return body
    sealed = seal_fields(data)
    return body if sealed == data else json.dumps(sealed).encode()

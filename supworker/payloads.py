"""What publishers may send: one declarative schema per job domain, in their camelCase.

`parse_message` turns a RabbitMQ body into a validated job or raises InvalidMessage whose
reason names every bad field, so an operator reading a dead letter knows what to fix.
Unknown extra fields are ignored, so publishers can add fields before supworker reads them.

Whatever passes can be stored and queued as it is: JSON is read strictly (no NaN or Infinity,
no number beyond a float's range), and nothing that PostgreSQL's jsonb refuses (NUL characters,
lone UTF-16 surrogates) or that would take deep recursion to copy reaches a job's payload. A
duplicated key keeps its last value, as JavaScript's JSON.parse does.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NoReturn, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from supworker import jobtypes
from supworker.env import E164_RE
from supworker.envelope import open_fields
from supworker.jobtypes import Domain

_JOB_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_FCM_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")
MAX_NESTING = 32  # levels of objects and arrays in free-form `data`; publishers send flat maps


def _job_id(value: str) -> str:
    if not _JOB_ID_RE.match(value):
        raise ValueError("must be 1-128 letters, digits, '.', '_', ':' or '-'")
    return value


def _storage_key(value: str) -> str:
    """An object key inside the media store: relative, no way out of it, nothing invisible."""
    if _CONTROL_RE.search(value):
        raise ValueError("must not contain control characters")
    if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        raise ValueError("must be a relative key, not an absolute path")
    if "\\" in value:
        raise ValueError("must use '/' as separator")
    if any(part in ("..", ".") for part in value.split("/")):
        raise ValueError("must not contain '.' or '..' path segments")
    if "//" in value or value.endswith("/"):
        raise ValueError("must not contain empty path segments")
    return value


def _e164(value: str) -> str:
    if not E164_RE.match(value):
        raise ValueError("must be an E.164 number such as +14155550100")
    return value


def _unstorable(value: Any, max_depth: int = MAX_NESTING) -> tuple[str, str] | None:
    """(where, what) of the first thing in `value` that jsonb refuses or that nests too deeply.

    Iterative on purpose: a recursive walk is what deep nesting would break.
    """
    pending: list[tuple[Any, str, int]] = [(value, "", 0)]
    while pending:
        item, where, depth = pending.pop()
        if depth > max_depth:
            return where, f"nests deeper than {MAX_NESTING} levels"
        if isinstance(item, dict):
            for key, child in item.items():
                pending.append((key, f"{where}.{key!a} (a key)", depth + 1))
                pending.append((child, f"{where}.{_printable(key)}", depth + 1))
        elif isinstance(item, list):
            pending.extend((child, f"{where}[{index}]", depth + 1) for index, child in enumerate(item))
        elif isinstance(item, str):
            if "\x00" in item:
                return where, "must not contain NUL characters (\\u0000)"
            try:
                item.encode()
            except UnicodeEncodeError:
                return where, "must be valid Unicode (it holds a lone UTF-16 surrogate)"
    return None


def _where(path: str) -> str:
    path = path.lstrip(".")
    return path if len(path) <= 80 else "…" + path[-79:]


def _fcm_token(value: str) -> str:
    if not _FCM_TOKEN_RE.match(value):
        raise ValueError("must be printable ASCII without spaces, as FCM registration tokens are")
    return value


def usable_message_id(value: object) -> bool:
    """Whether an AMQP message_id can serve as a job id: text that Redis keys and the job
    records can hold (pika gives bytes for one that is not UTF-8; NUL breaks PostgreSQL)."""
    return isinstance(value, str) and 0 < len(value) <= 128 and not _CONTROL_RE.search(value)


JobId = Annotated[str, AfterValidator(_job_id)]
StorageKey = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_storage_key)]
Phone = Annotated[str, AfterValidator(_e164)]
ShortText = Annotated[str, Field(max_length=256)]
# A token kept in fcm_devices, whose unique index refuses entries over 2704 bytes (a 4096-character
# token fails to insert); FCM's own tokens are about 150 to 250 characters.
DeviceToken = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_fcm_token)]
# Device messages whose `at` is further ahead of our clock are refused: a future `at` would pin
# the token's state until then (a publisher whose clock runs a day fast would block a day of changes).
MAX_CLOCK_SKEW = timedelta(minutes=10)


def _aware(value: datetime | None) -> datetime | None:
    # An ISO time without an offset is UTC (JavaScript's toISOString always says Z); a naive
    # 0001-01-01 would otherwise fail to convert to epoch seconds in local time.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


# Epoch milliseconds (as the Node publishers send) or ISO 8601; UTC when no offset is given.
Moment = Annotated[datetime, AfterValidator(_aware)]


class Message(BaseModel):
    """What every message may carry besides its domain's fields; a domain's schema extends it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    jobId: JobId | None = None
    timestamp: Moment | None = None
    priority: Literal["low", "normal", "high"] | None = None


def free_form(value: dict[str, Any]) -> dict[str, Any]:
    """A map of anything a publisher chose (a cleanup's options): checked only for what storage refuses."""
    problem = _unstorable(value)
    if problem:
        raise ValueError(f"{problem[1]} (at {_where(problem[0])})")
    return value


FreeForm = Annotated[dict[str, Any], AfterValidator(free_form)]
_ENVELOPE_FIELDS = {"jobId", "timestamp", "priority", "retryCount"}


class InvalidMessage(Exception):
    """A message that can never become a job; `reason` says why, for the dead letter."""

    def __init__(self, reason: str):
        # It travels in an AMQP header and a PostgreSQL text column: no NUL, no lone surrogate.
        self.reason = reason.encode(errors="backslashreplace").decode().replace("\x00", "\\x00")
        super().__init__(self.reason)


@dataclass(frozen=True)
class ParsedJob:
    job_type: str
    payload: dict[str, Any]
    job_id: str | None
    created_at: float | None
    priority: str | None
    retries_done: int


def _printable(text: str) -> str:
    """A field name as a reader can see it: a publisher's key may hold anything."""
    return text if text.isprintable() else ascii(text)[1:-1]


def describe_errors(error: ValidationError) -> str:
    """Every problem pydantic found, as `field: what is wrong; …`."""
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(_printable(str(part)) for part in item["loc"]) or "message"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"the number {text[:40]} is beyond the range of a 64-bit float")
    return number


_STRICT_JSON = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def _decode_json(body: bytes) -> tuple[Any, bool]:
    """The body as strict JSON (UTF-8, or UTF-16/32 as json.loads detects them; finite numbers),
    and whether it may hold a NUL character (only a \\u0000 escape can make one)."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
        return _STRICT_JSON.decode(text), "\\u0000" in text
    except RecursionError:
        raise InvalidMessage("message is not JSON we can read: its arrays or objects nest too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InvalidMessage(f"message is not JSON: {exc}") from None


def _type_from_routing_key(domain: Domain, routing_key: str) -> str:
    kinds = [t.short_name for t in jobtypes.job_types().values() if t.domain == domain.name and t.published]
    key_parts = routing_key.split(".")
    if len(key_parts) < 2 or key_parts[1] not in kinds:
        expected = " or ".join(f"{domain.name}.{kind}" for kind in kinds)
        raise InvalidMessage(f"routing key {routing_key!r} must be {expected}")
    return key_parts[1]


def parse_message(
    domain_name: str, body: bytes, routing_key: str | bytes = "", max_bytes: int = 256 * 1024
) -> ParsedJob:
    """Validate one message body published under a domain an app declares (supworker.jobtypes)."""
    domain = jobtypes.domains()[domain_name]
    # pika hands over a routing key that is not UTF-8 as bytes; either way it ends up in records.
    if not isinstance(routing_key, str) or _CONTROL_RE.search(routing_key):
        raise InvalidMessage(f"routing key {routing_key!r} must be printable UTF-8 text")
    if len(body) > max_bytes:
        raise InvalidMessage(f"message is {len(body)} bytes, larger than the {max_bytes}-byte limit")
    data, may_hold_nul = _decode_json(body)
    if not isinstance(data, dict):
        raise InvalidMessage(f"message is a JSON {type(data).__name__}, not an object")
    try:  # a dead letter republished by an operator carries its secret fields sealed
        data = open_fields(data)
    except ValueError as exc:
        raise InvalidMessage(f"a sealed field cannot be opened: {exc}") from None
    if domain.typed_by_routing_key and "type" not in data:
        data = {**data, "type": _type_from_routing_key(domain, routing_key)}
    try:
        job = cast(Message, domain.schema.model_validate(data))
    except ValidationError as exc:
        raise InvalidMessage(f"invalid {domain.name} job: {describe_errors(exc)}") from None

    kind: str = domain.only_type or job.type  # type: ignore[attr-defined]  # a typed domain's schema has one
    key_parts = routing_key.split(".")
    # On the default exchange the routing key is the queue's name, which says nothing of the type.
    if domain.rabbit_queue is not None and len(key_parts) > 1 and key_parts[1] != kind:
        raise InvalidMessage(f"routing key {routing_key!r} does not match the payload's type {kind!r}")
    payload = job.model_dump(mode="json", exclude_none=True, exclude=_ENVELOPE_FIELDS)
    # Typed str fields accept NUL (they refuse surrogates); `data` was checked whole already.
    problem = _unstorable(payload, MAX_NESTING + 1) if may_hold_nul else None
    if problem:
        raise InvalidMessage(f"invalid {domain.name} job: {_where(problem[0])}: {problem[1]}")
    return ParsedJob(
        job_type=f"{domain.name}.{kind}",
        payload=payload,
        job_id=job.jobId,
        created_at=job.timestamp.timestamp() if job.timestamp else None,
        priority=job.priority,
        # Only some schemas have it; a missing attribute is slow to ask a pydantic model for.
        retries_done=job.__dict__.get("retryCount", 0),
    )

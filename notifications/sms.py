"""SMS: backends chosen by SMS_BACKEND (console by default, vonage: Vonage's SMS REST API at
SMS_API_URL), numbers checked against E.164, a rate limit shared by all workers, and the
notification log claimed before each send.

Message kinds (`data.kind`): "otp" and "2fa" put the sealed `otp` field into a fixed text and
are never logged with the code; anything else is an alert with the job's title and body.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import requests
from django.conf import settings

from notifications import delivery, ledger
from notifications.rendering import brand_name
from supworker.env import E164_RE
from supworker.envelope import Envelope
from supworker.handlers import Outcome, PermanentError, TransientError
from supworker.masking import mask_phone

logger = logging.getLogger(__name__)
CODE_KINDS = {"otp", "2fa"}
TEXTS = {
    "otp": "{brand}: {code} is your verification code. It expires in {minutes} min. Never share it.",
    "2fa": "{brand}: {code} is your sign-in code. If this was not you, change your password now.",
}
# Vonage statuses worth trying again: throttled, internal error, partner quota exceeded,
# bad credentials (an operator fixes them; the messages must not be lost meanwhile).
VONAGE_TRANSIENT = {"1", "4", "5", "9"}


@dataclass(frozen=True)
class Sms:
    to: str
    text: str
    kind: str
    delivery: ledger.Delivery


def compose(envelope: Envelope) -> Sms:
    payload = envelope.payload
    number = envelope.reveal("phoneNumber") or ""
    if not E164_RE.match(number):
        raise PermanentError("phoneNumber must be an E.164 number such as +14155550100")
    data = payload.get("data") or {}
    kind = data.get("kind", "alert")
    if kind in CODE_KINDS:
        code = envelope.reveal("otp") or ""
        if not code:
            raise PermanentError(f"an {kind} SMS needs the sealed 'otp' field")
        text = TEXTS[kind].format(brand=brand_name(), code=code, minutes=data.get("expiryMinutes", "10"))
        logged_body = f"{kind} SMS (code withheld)"
    else:
        title, body = payload.get("title") or "", payload.get("body") or ""
        text = f"{title}: {body}" if title and body else title or body
        logged_body = body
    delivery = ledger.Delivery(
        job_id=envelope.job_id,
        user_id=str(payload["userId"]),
        type="sms",
        recipient=mask_phone(number),
        title=payload.get("title") or "",
        body=logged_body,
    )
    return Sms(number, text, kind, delivery)


class ConsoleBackend:
    """Development: says what would be sent, without the number or any code."""

    def send(self, sms: Sms) -> str:
        shown = f"<{sms.kind} code withheld>" if sms.kind in CODE_KINDS else sms.text
        logger.info("SMS (console) to %s: %s", sms.delivery.recipient, shown)
        return f"console-{uuid.uuid4().hex[:12]}"

    def close(self) -> None:
        pass


class VonageBackend:
    """Vonage's SMS API: POST {SMS_API_URL}/sms/json, one HTTP session for a batch."""

    def __init__(self) -> None:
        config = settings.CONFIG.notifications
        self.url = config.sms_api_url.rstrip("/") + "/sms/json"
        self.credentials = {"api_key": config.sms_api_key, "api_secret": config.sms_api_secret}
        self.sender = config.sms_from_number.lstrip("+")
        self.session = requests.Session()

    def send(self, sms: Sms) -> str:
        form = self.credentials | {"from": self.sender, "to": sms.to.lstrip("+"), "text": sms.text}
        if not sms.text.isascii():
            form["type"] = "unicode"
        try:
            response = self.session.post(self.url, data=form, timeout=10)
        except requests.RequestException as exc:
            raise TransientError(f"SMS provider unreachable: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("Retry-After")
            raise TransientError(
                f"SMS provider answered HTTP {response.status_code}",
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        if response.status_code >= 400:
            raise TransientError(f"SMS provider refused the request: HTTP {response.status_code}")
        try:
            message = response.json()["messages"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise TransientError("SMS provider answered something that is not Vonage's JSON") from None
        status = str(message.get("status"))
        if status == "0":
            return str(message.get("message-id", ""))
        reason = f"SMS provider status {status}: {message.get('error-text', '')}"
        raise TransientError(reason) if status in VONAGE_TRANSIENT else PermanentError(reason)

    def close(self) -> None:
        self.session.close()


def backend() -> ConsoleBackend | VonageBackend:
    return VonageBackend() if settings.CONFIG.notifications.sms_backend == "vonage" else ConsoleBackend()


class Channel(delivery.OneAtATime[Sms]):
    """SMS as a channel of the shared send loop (notifications/delivery.py)."""

    name = "SMS"
    rate_key = "sms"

    def compose_one(self, envelope: Envelope) -> delivery.Item[Sms]:
        sms = compose(envelope)
        return delivery.Item(envelope, sms, sms.delivery)

    def per_second(self) -> int:
        return settings.CONFIG.notifications.sms_rate_per_second

    def sender(self) -> ConsoleBackend | VonageBackend:
        return backend()

    def error_for(self, exc: Exception, message: Sms) -> Exception:
        if isinstance(exc, PermanentError | TransientError):
            return exc  # the backends say what each failure means
        raise exc


def send_batch(envelopes: list[Envelope]) -> list[Outcome]:
    return delivery.deliver(envelopes, Channel())

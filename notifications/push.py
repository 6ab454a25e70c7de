"""Push notifications: a batch of jobs is sent to FCM's v1 API by a pool of threads, one
request per message (as firebase-admin's `send_each` does), each answer recorded as it comes.

A job goes to its `fcmToken`, or to every active device of `userId` (or of each user in
`userIds`, a multicast). Each (job, device) pair is claimed in the notification log before
sending, so a redelivered job sends nothing twice; its outcome is recorded as soon as FCM
answers, so a worker killed mid-batch resends only the pushes FCM had not answered yet (see
notifications/ledger.py). Those carry the same deduplication key as their first send
(notifications/push_message.py, which builds each message): iOS shows them once
(apns-collapse-id), Android and browsers replace the first notification with the second
(notification tag; Web Push Topic for one still queued). Android's `collapse_key` is not used:
FCM keeps at most four collapse keys per device while it is offline and may drop the rest, so
one per job would lose messages.

A message push of a chat a user muted (notifications/muting.py) goes to that user's devices
without sound, or not at all: a skipped device gets its log row saying why, nothing is sent.

Per token: UNREGISTERED, SENDER_ID_MISMATCH and an INVALID_ARGUMENT about the token deactivate
the device and are not retried; any other INVALID_ARGUMENT is about the message (a reserved data
key, too big) and fails it without touching the device; QUOTA_EXCEEDED (429), INTERNAL (500),
UNAVAILABLE (503) and network errors are retried by the runner with backoff, honouring
Retry-After (at least a minute for quota).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import google.auth.exceptions
from django.conf import settings
from firebase_admin import exceptions, messaging

from notifications import delivery, fcm, ledger, muting
from notifications.models import Device, MuteMode
from notifications.push_message import build_message
from supworker.envelope import Envelope
from supworker.handlers import Outcome, PermanentError, TransientError

logger = logging.getLogger(__name__)

QUOTA_MIN_RETRY_AFTER = 60.0

# These codes mean the token will never work again: stop sending to it.
DEAD_TOKEN_CODES = {"UNREGISTERED", "SENDER_ID_MISMATCH"}
# INVALID_ARGUMENT also means a message FCM refuses whatever the token; Google's answer for a
# bad token says "The registration token is not a valid FCM registration token".
INVALID_REGISTRATION_PHRASE = "registration token"


@dataclass(frozen=True)
class Push:
    """One device's copy of a job."""

    token: str
    silent: bool = False  # its user muted the chat in silent mode


Target = delivery.Item[Push]


class DeadToken(PermanentError):
    """FCM will never accept this token again: its device is deactivated."""


def token_reference(token: str) -> str:
    """What the log keeps instead of a token: a short digest, enough to tell devices apart."""
    return "fcm:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def _user_ids(envelope: Envelope) -> list[str]:
    ids = envelope.payload.get("userIds") or [envelope.payload["userId"]]
    return [str(user_id) for user_id in dict.fromkeys(ids)]


@dataclass
class Targets:
    """A batch's pushes: those to send, and those a user's mute skips (with that mute)."""

    to_send: list[Target]
    skipped: list[tuple[ledger.Delivery, muting.Mute]]


def resolve_targets(envelopes: list[Envelope]) -> Targets:
    """Every (job, token) pair of the batch, looking up the devices of all users in one query,
    and their users' mutes of the jobs' chats in another."""
    users_of = {e.job_id: [str(e.payload["userId"])] if e.payload.get("fcmToken") else _user_ids(e) for e in envelopes}
    wanted_users = {u for e in envelopes if not e.payload.get("fcmToken") for u in users_of[e.job_id]}
    devices: dict[str, list[str]] = defaultdict(list)
    if wanted_users:
        rows = Device.objects.filter(user_id__in=wanted_users, active=True).values_list("user_id", "registration_id")
        for user_id, token in rows:
            devices[str(user_id)].append(token)
    mutes = muting.in_force(envelopes, users_of)
    targets = Targets([], [])
    for envelope in envelopes:
        payload = envelope.payload
        if payload.get("fcmToken"):
            pairs = [(users_of[envelope.job_id][0], envelope.reveal("fcmToken"))]
        else:
            pairs = [(u, token) for u in users_of[envelope.job_id] for token in dict.fromkeys(devices[u])]
        for user_id, token in pairs:
            logged = ledger.Delivery(
                job_id=envelope.job_id,
                user_id=user_id,
                type="push",
                recipient=token_reference(token),
                title=payload.get("title") or "",
                body=payload.get("body") or "",
            )
            mute = muting.mute_for(envelope, user_id, mutes)
            if mute is not None and mute.mode == MuteMode.SKIP:
                targets.skipped.append((logged, mute))
            else:
                targets.to_send.append(Target(envelope, Push(token, silent=mute is not None), logged))
    return targets


@dataclass(frozen=True)
class Failure:
    """What one failed send means."""

    code: str  # FCM's error code
    dead_token: bool = False  # the token will never work again
    permanent: bool = False  # this message will never be accepted (a dead token, or the message itself)
    retry_after: float | None = None


def classify(error: exceptions.FirebaseError) -> Failure:
    code = _fcm_code(error) or str(error.code)
    if code in DEAD_TOKEN_CODES or isinstance(error, messaging.UnregisteredError | messaging.SenderIdMismatchError):
        return Failure(code, dead_token=True, permanent=True)
    if code == "INVALID_ARGUMENT" or isinstance(error, exceptions.InvalidArgumentError):
        return Failure(code, dead_token=INVALID_REGISTRATION_PHRASE in str(error).lower(), permanent=True)
    retry_after = _retry_after(error)
    if code == "QUOTA_EXCEEDED" or isinstance(error, messaging.QuotaExceededError):
        retry_after = max(retry_after or 0, QUOTA_MIN_RETRY_AFTER)
    return Failure(code, retry_after=retry_after)


def _fcm_code(error: exceptions.FirebaseError) -> str | None:
    """Google's `error.details[].errorCode`, more precise than the HTTP status."""
    response = error.http_response
    if response is None:
        return None
    try:
        details = response.json().get("error", {}).get("details", [])
    except ValueError:
        return None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return None


def _retry_after(error: exceptions.FirebaseError) -> float | None:
    response = error.http_response
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:  # the other form RFC 9110 allows: an HTTP date
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: the runner's own backoff applies
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((moment - datetime.now(UTC)).total_seconds(), 0.0)


class Channel:
    """Push as a channel of the shared send loop (notifications/delivery.py): a job may reach many
    devices, and a batch's pushes go out fcm.SEND_THREADS at a time."""

    name = "push"

    def __init__(self) -> None:
        self.skipped: Counter[str] = Counter()  # job id -> devices its users' mutes skipped

    def compose(self, envelopes: list[Envelope]) -> tuple[list[Target], dict[str, Outcome]]:
        targets = resolve_targets(envelopes)
        _log_skipped(targets.skipped)
        self.skipped.update(logged.job_id for logged, _ in targets.skipped)
        reached = {t.envelope.job_id for t in targets.to_send} | set(self.skipped)
        _log_users_without_devices([e for e in envelopes if e.job_id not in reached])
        return targets.to_send, {}

    def send(self, items: list[Target]) -> Iterator[list[delivery.Answer[Push]]]:
        try:
            fcm_app = fcm.app()
            # A token due for refresh is refreshed here, once, not by each of the sending threads.
            fcm.prepare()
        except fcm.NotConfigured as exc:
            if settings.CONFIG.production:
                raise delivery.Unavailable(str(exc)) from None
            fcm_app = None
        except google.auth.exceptions.GoogleAuthError as exc:  # refused or unreachable token endpoint
            raise delivery.Unavailable(f"no FCM access token: {exc}") from None
        dead_tokens: list[str] = []
        for answered in _send(fcm_app, items):
            answers = [_answer(target, message_id, error) for target, message_id, error in answered]
            dead_tokens += [a.item.message.token for a in answers if isinstance(a.error, DeadToken)]
            yield answers
        if dead_tokens:
            # fcm-django's deactivation: its device_deactivated signal fires when
            # FCM_DJANGO_SETTINGS["EMIT_DEVICE_DEACTIVATED_SIGNAL"] asks for it.
            deactivated = Device.objects.filter(registration_id__in=dead_tokens).deactivate(
                reason="firebase_error", source="notification.push"
            )
            logger.info("deactivated %d device(s) whose FCM token is no longer valid", len(deactivated))

    def outcome(self, envelope: Envelope, answers: list[delivery.Answer[Push]]) -> Outcome:
        sent = sum(a.error is None for a in answers)  # now or by an earlier delivery of the job
        retry = [a.error for a in answers if isinstance(a.error, TransientError)]
        dead = [a.error for a in answers if isinstance(a.error, DeadToken)]
        refused = [
            a.error for a in answers if isinstance(a.error, PermanentError) and not isinstance(a.error, DeadToken)
        ]
        if retry:
            waits = [e.retry_after for e in retry if e.retry_after is not None]
            detail = f"{len(retry)} of {len(answers)} push(es) to retry; first: {retry[0]}"
            return Outcome.failure(envelope, TransientError(detail, retry_after=max(waits) if waits else None))
        if (dead or refused) and not sent:
            first = (refused or dead)[0]
            return Outcome.failure(envelope, PermanentError(f"no device accepted the push: {first}"))
        result = {"sent": sent, "deactivated": len(dead), "devices": len(answers)}
        if skipped := self.skipped[envelope.job_id]:
            result |= {"skipped": skipped, "devices": len(answers) + skipped}
        return Outcome.success(envelope, result)


def send_batch(envelopes: list[Envelope]) -> list[Outcome]:
    return delivery.deliver(envelopes, Channel())


def _answer(target: Target, message_id: str | None, error: exceptions.FirebaseError | None) -> delivery.Answer[Push]:
    if error is None:
        return delivery.Answer(target, message_id=message_id or "")
    failure = classify(error)
    reason = f"{failure.code}: {error}"
    if failure.dead_token:
        meaning: Exception = DeadToken(reason)
    elif failure.permanent:
        meaning = PermanentError(reason)
    else:
        meaning = TransientError(reason, retry_after=failure.retry_after)
    return delivery.Answer(target, error=meaning, note=reason)


NO_DEVICE = "no-device"  # the log row's recipient when a user has no active device


def _log_users_without_devices(envelopes: list[Envelope]) -> None:
    """A log row (success false) per job whose users have no active device: nothing was sent,
    and an operator asking "did Bob get it?" finds why. Once per job, as every log row."""
    deliveries = [
        ledger.Delivery(job_id=e.job_id, user_id=_user_ids(e)[0], type="push", recipient=NO_DEVICE,
                     title=e.payload.get("title") or "", body=e.payload.get("body") or "")
        for e in envelopes
    ]  # fmt: skip
    rows = ledger.claim(deliveries)
    ledger.record([(row_id, False, "no active device for the user", "") for row_id in rows.values()])


def _log_skipped(skipped: list[tuple[ledger.Delivery, muting.Mute]]) -> None:
    """A log row (success false, the reason) per device a mute skipped: nothing is sent to it.
    A row sent by an earlier delivery of the job stays as it is."""
    rows = ledger.claim([logged for logged, _ in skipped])
    reasons = {(logged.job_id, logged.recipient): mute.reason() for logged, mute in skipped}
    ledger.record([(row_id, False, reasons[key], "") for key, row_id in rows.items()])


Reply = tuple[Target, str | None, exceptions.FirebaseError | None]  # (target, message id, error)


def _send(fcm_app: Any, targets: list[Target]) -> Iterator[list[Reply]]:
    """Send every target, fcm.SEND_THREADS at a time; yields the answers that arrived since the last
    yield, so the caller records them while the other requests are still out."""
    if fcm_app is None:  # development without FCM settings: say what would be sent
        for target in targets:
            logger.info(
                "push (console, FCM not configured) to %s: %s", target.delivery.recipient, target.delivery.title
            )
        yield [(target, "console", None) for target in targets]
        return
    # A ValueError here sends nothing.
    messages = [build_message(t.envelope, t.message.token, t.message.silent) for t in targets]
    with ThreadPoolExecutor(max_workers=min(len(targets), fcm.SEND_THREADS), thread_name_prefix="fcm") as pool:
        futures: dict[Future, Target] = {
            pool.submit(_send_one, fcm_app, message): target for target, message in zip(targets, messages, strict=True)
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield [(futures[future], *future.result()) for future in done]


def _send_one(fcm_app: Any, message: messaging.Message) -> tuple[str | None, exceptions.FirebaseError | None]:
    try:
        return messaging.send(message, app=fcm_app), None
    except exceptions.FirebaseError as exc:
        return None, exc
    except Exception as exc:  # noqa: BLE001 - as send_each does: anything else fails this message only
        return None, exceptions.UnknownError(f"unknown error while sending: {exc}", cause=exc)

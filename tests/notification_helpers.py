"""Helpers for the notification tests: submit notification jobs to RQ and run them through the real runner."""

from __future__ import annotations

import uuid

import firebase_admin
from firebase_admin import messaging

from supworker import jobtypes
from supworker.enqueue import Submission, enqueue
from supworker.envelope import Envelope
from tests.helpers import drain_queue


def envelope(job_type: str, job_id: str | None = None, **payload) -> Envelope:
    """A notification job as the consumer makes it: secret fields sealed."""
    payload.setdefault("userId", str(uuid.uuid4()))
    return Envelope.sealed(job_id=job_id or f"n-{uuid.uuid4().hex[:12]}", job_type=job_type, payload=payload)


def submit(redis_conn, *envelopes: Envelope) -> list[Envelope]:
    queues = {e.job_id: jobtypes.job_type(e.job_type).queue_for(e.priority) for e in envelopes}
    enqueue(redis_conn, [Submission(e, f"id:{e.job_id}", 600) for e in envelopes], queues)
    return list(envelopes)


def work(redis_conn, queue_name: str, rounds: int = 1, wait_scheduled: float = 3) -> None:
    drain_queue(redis_conn, queue_name, rounds, wait_scheduled)


def supworker_fcm_apps() -> list[firebase_admin.App]:
    return [app for app in list(firebase_admin._apps.values()) if app.name.startswith("supworker-")]


def close_fcm_connections() -> None:
    """Close the kept-alive connections of supworker's firebase-admin apps (a server waits for them to stop)."""
    for app in supworker_fcm_apps():
        messaging._get_messaging_service(app)._client.session.close()


def forget_fcm_apps() -> None:
    """supworker's firebase-admin apps are kept per configuration; a later server on a reused
    port must not find the app made for an earlier one."""
    close_fcm_connections()
    for app in supworker_fcm_apps():
        firebase_admin.delete_app(app)

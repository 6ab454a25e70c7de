"""What an RQ worker makes before it forks work-horses (supworker.handlers.before_fork): the FCM
app and the compiled e-mail templates, inherited by every horse; a failure there must not stop
the worker."""

from __future__ import annotations

import logging

import firebase_admin
import pytest
from django.template import engines

from notifications import fcm
from supworker import handlers

pytestmark = pytest.mark.django_db
pytest_plugins = ["tests.notification_fixtures"]


def test_the_worker_makes_the_fcm_app_and_compiles_the_email_templates_before_forking(fcm_server):
    (loader,) = engines["django"].engine.template_loaders  # the cached loader wraps the others
    loader.reset()  # forget what earlier tests in this process compiled
    before = set(firebase_admin._apps)
    handlers.prepare_worker()

    made = set(firebase_admin._apps) - before
    assert len(made) == 1, "the app for the configured endpoint is made in the worker"
    app = firebase_admin.get_app(made.pop())
    assert app is fcm.app(), "a work-horse finds it instead of making its own"
    assert app.credential.get_credential().valid
    compiled = {name for name in loader.get_template_cache if name.startswith("emails/")}
    assert {"emails/otp.html", "emails/otp.subject.txt", "emails/notification.txt"} <= compiled


def test_a_failing_preparation_is_logged_and_the_worker_goes_on(monkeypatch, caplog):
    def broken() -> None:
        raise RuntimeError("token endpoint unreachable")

    monkeypatch.setattr(handlers, "_BEFORE_FORK", [broken, *handlers._BEFORE_FORK])
    with caplog.at_level(logging.WARNING, logger="supworker.handlers"):
        handlers.prepare_worker()
    assert "failed before forking; each work-horse will do it" in caplog.text
    assert "token endpoint unreachable" in caplog.text

"""Ctrl-C against PostgreSQL writes: a cleanup batch ends before the interrupt, and a command's
record is written even where an interrupt left the connection stuck in a transaction."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from cleanup.base import Options, Run
from supworker.envelope import Envelope
from supworker.models import UserSession
from supworker.runner import run_here

pytestmark = pytest.mark.django_db(transaction=True)


def test_ctrl_c_in_a_cleanup_batch_stops_the_run_once_the_batch_has_committed():
    old = timezone.now() - timedelta(days=31)
    UserSession.objects.bulk_create([UserSession(user_id=uuid.uuid4(), last_active_at=old) for _ in range(3)])
    run = Run(name="sessions", options=Options(), batch_size=1, deadline=float("inf"))

    def step() -> dict[str, int]:
        signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the batch
        UserSession.objects.filter(pk=UserSession.objects.values("pk")[:1]).delete()
        return {"sessions_removed": 1}

    with pytest.raises(KeyboardInterrupt):
        run.batch(step)
    assert UserSession.objects.count() == 2, "the batch was committed before the interrupt went on"
    assert not connection.in_atomic_block and connection.get_autocommit()


def enter_an_atomic_block_never_left() -> None:
    transaction.atomic().__enter__()  # as an interrupt inside atomic's own exit leaves it


def turn_the_drivers_autocommit_off() -> None:
    connection.ensure_connection()
    connection.connection.autocommit = False  # as an interrupt inside set_autocommit(False) leaves it


@pytest.mark.parametrize("stuck", [enter_an_atomic_block_never_left, turn_the_drivers_autocommit_off])
def test_an_interrupted_commands_record_is_failed_even_when_its_connection_was_left_in_a_transaction(
    redis_conn, stuck: Callable[[], None]
):
    envelope = Envelope(job_id=f"cli:sessions:{uuid.uuid4()}", job_type="cleanup.sessions", payload={})

    def interrupted(envelopes: list[Envelope]) -> list:
        stuck()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_here([envelope], interrupted)

    other = connections.create_connection("default")  # sees only what was committed
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT status, error FROM job_runs WHERE job_id = %s", [envelope.job_id])
            assert cursor.fetchone() == ("failed", "KeyboardInterrupt: ")
    finally:
        other.close()

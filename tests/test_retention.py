"""Nothing supworker writes grows without bound: the retention cleanup removes exactly the rows
older than each table's retention, and keeps the notification log for ever when told to."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from cleanup.base import Options
from cleanup.registry import CLEANUPS
from monitoring.models import HealthCheckResult
from notifications.models import Notification
from supworker.models import DeadLetter, GlobalStatistics

# Run again through PgBouncer in transaction mode by `make test`.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pgbouncer]


def days_ago(days: float):
    return timezone.now() - timedelta(days=days)


def notification(age_days: float) -> uuid.UUID:
    row = Notification.objects.create(
        id=uuid.uuid4(), user_id=uuid.uuid4(), type="push", success=True, created_at=days_ago(age_days)
    )
    return row.id


def dead_letter(failed_days: float, requeued_days: float | None = None) -> uuid.UUID:
    requeued = days_ago(requeued_days) if requeued_days is not None else None
    row = DeadLetter.objects.create(
        source=DeadLetter.Source.CONSUMER, error="bad", failed_at=days_ago(failed_days), requeued_at=requeued
    )
    return row.id


def health_check(age_days: float) -> int:
    return HealthCheckResult.objects.create(healthy=True, checks={}, checked_at=days_ago(age_days)).id


def snapshot(age_days: float) -> int:
    counts = dict(users=1, messages=1, messages_last_24h=1, stories=0, active_sessions=0)
    return GlobalStatistics.objects.create(computed_at=days_ago(age_days), **counts).id


def run(**options):
    return CLEANUPS["retention"](Options(**options))


def test_each_table_loses_exactly_its_rows_older_than_its_retention():
    """Defaults: notification log 90 days, health checks 7, dead letters 30 after a requeue and
    90 in any case, statistics snapshots 365."""
    kept_notifications = {notification(89), notification(0)}
    notification(91)
    kept_dead = {
        dead_letter(failed_days=89),  # nobody handled it, not 90 days old yet
        dead_letter(failed_days=60, requeued_days=29),  # requeued lately
    }
    dead_letter(failed_days=91)
    dead_letter(failed_days=40, requeued_days=31)
    kept_checks = {health_check(6.9), health_check(0)}
    health_check(7.1)
    kept_snapshots = {snapshot(364)}
    snapshot(366)

    summary = run()

    assert set(Notification.objects.values_list("id", flat=True)) == kept_notifications
    assert set(DeadLetter.objects.values_list("id", flat=True)) == kept_dead
    assert set(HealthCheckResult.objects.values_list("id", flat=True)) == kept_checks
    assert set(GlobalStatistics.objects.values_list("id", flat=True)) == kept_snapshots
    assert summary["counts"] == {
        "notification_log_removed": 1,
        "handled_dead_letters_removed": 1,
        "dead_letters_removed": 1,
        "health_check_results_removed": 1,
        "statistics_history_removed": 1,
    }


def test_a_notification_log_set_to_keep_forever_keeps_every_row(settings):
    settings.CONFIG = settings.CONFIG.with_section("notifications", notification_log_retention_days=0)
    rows = {notification(4000), notification(1)}
    old_check = health_check(30)
    summary = run()
    assert set(Notification.objects.values_list("id", flat=True)) == rows
    assert not HealthCheckResult.objects.filter(id=old_check).exists(), "the other tables still go by age"
    assert "notification_log_removed" not in summary["counts"]
    assert summary["details"]["kept_days"]["notification_log"] == 0


def test_a_dry_run_counts_what_would_go_and_removes_nothing():
    notification(100)
    dead_letter(failed_days=100)
    summary = run(dry_run=True)
    assert summary["counts"]["notification_log_to_remove"] == 1
    assert summary["counts"]["dead_letters_to_remove"] == 1
    assert Notification.objects.count() == 1 and DeadLetter.objects.count() == 1


def test_older_than_replaces_every_age_limit_for_one_run():
    fresh = notification(2)
    check = health_check(2)
    run(older_than=timedelta(days=1))
    assert not Notification.objects.filter(id=fresh).exists()
    assert not HealthCheckResult.objects.filter(id=check).exists()

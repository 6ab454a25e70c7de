"""One small table of its own, the leases; the cleanups work on the messenger's tables (supworker.models)."""

from __future__ import annotations

from django.db import models


class CronTable(models.Model):
    """No table: gives the cron table (with next run times) a page in the admin."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = verbose_name_plural = "cron table"


class CleanupLease(models.Model):
    """Who runs a cleanup now, and until when: a second run finds the lease held and does nothing.

    A row, not a session-level advisory lock, so it holds across the run's many transactions
    behind PgBouncer in transaction mode. The holder renews it before each batch; a worker killed
    mid-run leaves a lease that simply runs out (CLEANUP_LEASE_S).
    """

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=128, help_text="host:pid:run of the run holding it")
    expires_at = models.DateTimeField()

    class Meta:
        db_table = "cleanup_leases"

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder} until {self.expires_at}"

"""No tables of its own: the cleanups work on the messenger's tables (supworker.models)."""

from __future__ import annotations

from django.db import models


class CronTable(models.Model):
    """No table: gives the cron table (with next run times) a page in the admin."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = verbose_name_plural = "cron table"

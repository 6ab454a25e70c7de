"""Tables the maintenance jobs own: live websocket connections and aggregated statistics."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now

from supworker.models.fields import created_at, uuid_pk


class WebsocketConnection(models.Model):
    """One open websocket of a device; the gateway refreshes last_heartbeat_at while it lives."""

    id = uuid_pk()
    user_id = models.UUIDField(db_index=True)
    device_id = models.TextField(null=True, blank=True)
    session_id = models.UUIDField(null=True, blank=True, db_index=True, help_text="user_sessions.id")
    server_id = models.CharField(max_length=128, help_text="the gateway process holding the socket")
    connected_at = created_at()
    last_heartbeat_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "websocket_connections"
        indexes = [models.Index(fields=["last_heartbeat_at", "id"], name="websockets_heartbeat_id_idx")]

    def __str__(self) -> str:
        return f"{self.user_id} on {self.server_id}"


class UserStatistics(models.Model):
    user_id = models.UUIDField(primary_key=True)
    messages_sent = models.PositiveBigIntegerField(default=0)
    stories = models.PositiveIntegerField(default=0)
    active_sessions = models.PositiveIntegerField(default=0)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "user_statistics"
        verbose_name_plural = "user statistics"

    def __str__(self) -> str:
        return str(self.user_id)


class GlobalStatistics(models.Model):
    """One row per aggregation run: the whole service at that moment."""

    id = models.BigAutoField(primary_key=True)
    computed_at = models.DateTimeField(db_default=Now(), db_index=True)
    users = models.PositiveBigIntegerField()
    messages = models.PositiveBigIntegerField()
    messages_last_24h = models.PositiveBigIntegerField()
    stories = models.PositiveBigIntegerField()
    active_sessions = models.PositiveBigIntegerField()

    class Meta:
        db_table = "global_statistics"
        verbose_name_plural = "global statistics"

    def __str__(self) -> str:
        return f"statistics of {self.computed_at:%Y-%m-%d %H:%M}"


class HealthCheckResult(models.Model):
    """What the health-check job found, every five minutes."""

    id = models.BigAutoField(primary_key=True)
    checked_at = models.DateTimeField(db_default=Now(), db_index=True)
    healthy = models.BooleanField()
    checks = models.JSONField(help_text="name: {ok, latency_ms, error}")

    class Meta:
        db_table = "health_check_results"

    def __str__(self) -> str:
        return f"{'healthy' if self.healthy else 'UNHEALTHY'} at {self.checked_at:%Y-%m-%d %H:%M}"


class CronTable(models.Model):
    """No table: gives the cron table (with next run times) a page in the admin."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = verbose_name_plural = "cron table"

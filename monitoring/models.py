from django.db import models
from django.db.models.functions import Now


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


class Dashboard(models.Model):
    """No table: gives the operator's dashboard its place in the admin."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = verbose_name_plural = "dashboard"

from django.db import models


class Dashboard(models.Model):
    """No table: gives the operator's dashboard its place in the admin."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = verbose_name_plural = "dashboard"

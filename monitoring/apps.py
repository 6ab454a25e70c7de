from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from django.conf import settings

        from monitoring.prometheus import SupworkerCollector
        from supworker.metrics import register_collector
        from supworker.retention import Retention, keep_rows

        register_collector(SupworkerCollector())
        keep_rows(
            Retention(
                "health_check_results",
                "health_check_results",
                "checked_at",
                days=lambda: settings.CONFIG.monitoring.health_check_retention_days,
                setting="HEALTH_CHECK_RETENTION_DAYS",
            )
        )

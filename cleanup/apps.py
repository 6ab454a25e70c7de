from django.apps import AppConfig


class CleanupConfig(AppConfig):
    name = "cleanup"
    verbose_name = "Cleanup"

    def ready(self) -> None:
        from django.conf import settings

        from supworker.retention import Retention, keep_rows

        # The statistics cleanup adds a global_statistics snapshot every six hours.
        keep_rows(
            Retention(
                "statistics_history",
                "global_statistics",
                "computed_at",
                days=lambda: settings.CONFIG.cleanup.statistics_retention_days,
                setting="STATISTICS_RETENTION_DAYS",
            )
        )

from django.apps import AppConfig


class CleanupConfig(AppConfig):
    name = "cleanup"
    verbose_name = "Cleanup"

    def ready(self) -> None:
        from django.conf import settings

        from cleanup.archives import ARCHIVES
        from supworker.retention import Retention, keep_rows
        from supworker.user_data import hold_user_data

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
        # A user's erasure rewrites the message archives without them (docs/privacy.md).
        # global_statistics holds counts only, nobody's data; user_statistics is the core's.
        hold_user_data(ARCHIVES)

from django.apps import AppConfig


class SupworkerConfig(AppConfig):
    name = "supworker"
    verbose_name = "Messenger data and job records"

    def ready(self) -> None:
        from django.conf import settings

        from supworker.retention import Retention, keep_rows
        from supworker.user_data import register_core

        register_core()  # what the messenger's tables and the job records hold of a user

        # A dead letter an operator requeued is history soon; one nobody handled waits longer,
        # but not forever: a hostile publisher must not grow the table without bound.
        keep_rows(
            Retention(
                "handled_dead_letters",
                "dead_letters",
                "requeued_at",
                days=lambda: settings.CONFIG.dead_letter_handled_retention_days,
                setting="DEAD_LETTER_HANDLED_RETENTION_DAYS",
                where="requeued_at IS NOT NULL",
            )
        )
        keep_rows(
            Retention(
                "dead_letters",
                "dead_letters",
                "failed_at",
                days=lambda: settings.CONFIG.dead_letter_retention_days,
                setting="DEAD_LETTER_RETENTION_DAYS",
            )
        )

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from notifications import checks  # noqa: F401 - registers the system checks
        from notifications.lms_metrics import LmsCollector
        from supworker.metrics import register_collector

        register_collector(LmsCollector())

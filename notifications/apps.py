from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from anymail.signals import tracking
        from django.conf import settings

        from notifications import checks  # noqa: F401 - registers the system checks
        from notifications.dashboard import OTP_PANEL, OTP_PANEL_ORDER, otp_emails
        from notifications.lms_metrics import LmsCollector
        from notifications.suppression import record_event
        from notifications.suppression_metrics import SuppressedCollector
        from supworker.dashboard import register_panel
        from supworker.metrics import register_collector
        from supworker.retention import Retention, keep_rows
        from supworker.user_data import hold_user_data, table

        register_collector(LmsCollector())
        register_collector(SuppressedCollector())
        # The ESPs' bounces and complaints, from anymail's tracking webhooks (notifications/webhooks.py).
        tracking.connect(record_event, dispatch_uid="notifications.suppression")
        register_panel(OTP_PANEL, otp_emails, OTP_PANEL_ORDER)
        keep_rows(
            Retention(
                "notification_log",
                "notifications",
                "created_at",
                days=lambda: settings.CONFIG.notifications.notification_log_retention_days,
                setting="NOTIFICATION_LOG_RETENTION_DAYS",
            )
        )
        # What a user's erasure removes and export shows (docs/privacy.md); a device's token is
        # a credential of the app's install, not the user's data: the export leaves it out.
        for holding in (
            table("notifications", "notifications", "user_id"),
            table("fcm_devices", "fcm_devices", "user_id",
                  columns=("id", "name", "type", "device_id", "active", "date_created", "changed_at")),
            table("muted_chats", "muted_chats", "user_id", key=("chat_id",)),
        ):  # fmt: skip
            hold_user_data(holding)

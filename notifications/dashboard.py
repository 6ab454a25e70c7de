"""The admin dashboard's OTP e-mail panel (registered in supworker.dashboard by NotificationsConfig.ready)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from notifications import otp_stats
from supworker.enqueue import redis_connection

OTP_PANEL = "notifications/dashboard_otp_emails.html"
OTP_PANEL_ORDER = 10  # the first panel after the 24-hour chart, before the dead letters


def otp_emails() -> dict[str, Any]:
    """The LMS worker's statistics (notifications/otp_stats.py), times as datetimes for the template."""
    stats = otp_stats.read(redis_connection())
    error = stats.lastError
    return {
        "stats": stats,
        "last_delivered": datetime.fromtimestamp(stats.lastProcessedAt, UTC) if stats.lastProcessedAt else None,
        "last_error": error | {"at": datetime.fromtimestamp(error["at"], UTC)} if error else None,
    }

"""The monitoring section of the settings, `settings.CONFIG.monitoring`."""

from __future__ import annotations

from dataclasses import dataclass

from supworker.env import EnvReader

SECTION = "monitoring"


@dataclass(frozen=True)
class MonitoringConfig:
    health_check_retention_days: int  # health_check_results rows (288 a day) older than this go


def read(env: EnvReader) -> MonitoringConfig:
    return MonitoringConfig(health_check_retention_days=env.int("HEALTH_CHECK_RETENTION_DAYS", 7, 1, 3650))

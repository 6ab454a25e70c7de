"""The cleanup section of the settings, `settings.CONFIG.cleanup`: batches, time budget, and
each cleanup's retention (their schedules are the cron table's, CRON_<NAME>)."""

from __future__ import annotations

from dataclasses import dataclass

from supworker.env import EnvReader

SECTION = "cleanup"


@dataclass(frozen=True)
class CleanupConfig:
    batch_size: int
    time_budget_s: int
    lease_s: int  # how long a run's lease lasts unless renewed (before each batch)
    story_ttl_hours: int
    story_purge_after_days: int
    session_inactive_days: int
    temp_file_ttl_hours: int
    message_retention_days: int
    message_policy: str
    prekey_used_grace_days: int
    prekey_low_threshold: int
    orphan_prefixes: list[str]
    orphan_grace_hours: int
    websocket_stale_minutes: int
    job_record_retention_days: int
    statistics_retention_days: int  # global_statistics snapshots older than this are removed


def read(env: EnvReader) -> CleanupConfig:
    return CleanupConfig(
        batch_size=env.int("CLEANUP_BATCH_SIZE", 5000, 1, 100_000),
        time_budget_s=env.int("CLEANUP_TIME_BUDGET_S", 90, 5, 3600),
        lease_s=env.int("CLEANUP_LEASE_S", 300, 10, 86_400),
        story_ttl_hours=env.int("STORY_TTL_HOURS", 24, 1, 24 * 365),
        story_purge_after_days=env.int("STORY_PURGE_AFTER_DAYS", 7, 0, 3650),
        session_inactive_days=env.int("SESSION_INACTIVE_DAYS", 30, 1, 3650),
        temp_file_ttl_hours=env.int("TEMP_FILE_TTL_HOURS", 24, 1, 24 * 365),
        message_retention_days=env.int("MESSAGE_RETENTION_DAYS", 365, 1, 36500),
        message_policy=env.choice(
            "MESSAGE_RETENTION_POLICY",
            choices={"archive": "archive", "delete": "delete", "off": "off"},
            default="archive",
        ),
        prekey_used_grace_days=env.int("PREKEY_USED_GRACE_DAYS", 7, 0, 3650),
        prekey_low_threshold=env.int("PREKEY_LOW_THRESHOLD", 10, 0, 10_000),
        orphan_prefixes=env.list("ORPHAN_MEDIA_PREFIXES", ["media/"]),
        orphan_grace_hours=env.int("ORPHAN_MEDIA_GRACE_HOURS", 24, 1, 24 * 365),
        websocket_stale_minutes=env.int("WEBSOCKET_STALE_MINUTES", 15, 1, 1440),
        job_record_retention_days=env.int("JOB_RECORD_RETENTION_DAYS", 30, 1, 3650),
        statistics_retention_days=env.int("STATISTICS_RETENTION_DAYS", 365, 1, 36500),
    )

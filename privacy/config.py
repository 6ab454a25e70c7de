"""The privacy section of the settings, `settings.CONFIG.privacy`: erasure batches and how long
an export stays downloadable (docs/privacy.md)."""

from __future__ import annotations

from dataclasses import dataclass

from supworker.env import EnvReader

SECTION = "privacy"


@dataclass(frozen=True)
class PrivacyConfig:
    erasure_batch_size: int  # rows one erasure step removes, in one transaction
    export_retention_days: int  # an export's archive is deleted this long after it was written


def read(env: EnvReader) -> PrivacyConfig:
    return PrivacyConfig(
        erasure_batch_size=env.int("ERASURE_BATCH_SIZE", 1000, 1, 100_000),
        export_retention_days=env.int("EXPORT_RETENTION_DAYS", 7, 1, 365),
    )

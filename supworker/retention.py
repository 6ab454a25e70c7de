"""How long each table supworker writes keeps its rows: declared by the app that owns the table,
enforced by the cleanup app's `retention` cleanup (batched, locked, dry-runnable, on the cron
table), so nothing grows without bound.

An app registers its tables in its AppConfig.ready():

    keep_rows(Retention("health_check_results", "health_check_results", "checked_at",
                        days=lambda: settings.CONFIG.monitoring.health_check_retention_days,
                        setting="HEALTH_CHECK_RETENTION_DAYS"))

`days` is read when the cleanup runs (settings may differ per process); 0 keeps every row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class Retention:
    name: str  # what the cleanup's counts are called: "<name>_removed"
    table: str
    column: str  # the time a row's age counts from; rows where it is NULL are kept
    days: Callable[[], int]  # the age after which a row goes; 0: kept forever
    setting: str  # the variable that sets it, for people
    where: str = ""  # which rows this retention covers (SQL, no parameters); every row when empty


_RETENTIONS: dict[str, Retention] = {}


def keep_rows(retention: Retention) -> None:
    known = _RETENTIONS.get(retention.name)
    if known is not None and (known.table, known.column, known.where) != (
        retention.table,
        retention.column,
        retention.where,
    ):
        raise ImproperlyConfigured(f"retention {retention.name!r} is declared twice, differently")
    _RETENTIONS[retention.name] = retention


def retentions() -> list[Retention]:
    return list(_RETENTIONS.values())

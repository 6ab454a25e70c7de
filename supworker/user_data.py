"""What supworker holds of one user, declared by whoever holds it: erasure and export walk this.

Each holder (the core for the messenger's tables and the job records, each app for its own
tables and files) registers from its AppConfig.ready():

    hold_user_data(table("notifications", "notifications", "user_id"))

A holding erases in bounded steps: `erase(user_id, batch_size, resume)` removes at most about
`batch_size` of the user's rows (and the files they name) in the caller's transaction and says
where the next step starts; `resume` is None once nothing of the user is left there. The
privacy app keeps each holding's `resume` with the erasure's receipt, in the step's
transaction, so an erasure stopped anywhere (a crash, a timeout) goes on where it was.
`export(user_id)` streams the user's rows, `media(row)` names the stored files a row points at.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from supworker import storage

EXPORT_PAGE = 500  # rows read per query while exporting: memory does not grow with the user's history
DONE = None
START = ""


@dataclass(frozen=True)
class Step:
    counts: dict[str, int]  # what this step removed, e.g. {"messages": 3, "messages_media_files": 2}
    resume: str | None  # where the next step starts; None: nothing of the user is left here


@dataclass(frozen=True)
class Holding:
    name: str  # the receipt's and the export's name for it: "messages", "fcm_devices"
    erase: Callable[[uuid.UUID, int, str], Step]
    export: Callable[[uuid.UUID], Iterator[dict[str, Any]]] | None = None  # None: nothing the user gets back
    count: Callable[[uuid.UUID], int] | None = None  # rows a dry run reports; None: unknown before the run
    media: Callable[[dict[str, Any]], Iterable[str | None]] = lambda row: ()  # store keys an exported row names
    # Erasure order, lowest first: what may be copied elsewhere (messages into the archives) goes
    # before the copies are cleaned, the records of the erasure's own job last.
    order: int = 100


_HOLDINGS: dict[str, Holding] = {}


def hold_user_data(holding: Holding) -> None:
    known = _HOLDINGS.get(holding.name)
    if known is not None and known.order != holding.order:
        raise ImproperlyConfigured(f"user data {holding.name!r} is registered twice, differently")
    _HOLDINGS[holding.name] = holding


def holdings() -> list[Holding]:
    """Every holding, in erasure order."""
    return sorted(_HOLDINGS.values(), key=lambda h: (h.order, h.name))


def json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str, ensure_ascii=False)


# A table with a column naming the user: the common case.


def table(
    name: str,
    table: str,
    column: str,
    *,
    key: tuple[str, ...] = ("id",),
    media_columns: tuple[str, ...] = (),
    columns: tuple[str, ...] | None = None,
    order: int = 100,
) -> Holding:
    """The rows of `table` whose `column` is the user, with the store files `media_columns` name;
    an export shows `columns` (every column when None), page by page in `key` order."""
    rows = _Table(name, table, column, key, media_columns, columns)
    return Holding(name, rows.erase, rows.export, rows.count, rows.media_keys, order)


@dataclass(frozen=True)
class _Table:
    """Erasure deletes a batch, then the files its rows named (a file already gone is no error, so
    a step done twice does no harm). Export reads a page at a time, so memory stays flat however
    many rows the user has."""

    name: str
    table: str
    column: str
    key: tuple[str, ...]
    media_columns: tuple[str, ...]
    columns: tuple[str, ...] | None

    def erase(self, user_id: uuid.UUID, batch_size: int, resume: str) -> Step:
        returning = ", ".join(self.media_columns) or "1"
        key = ", ".join(self.key)
        with connection.cursor() as cursor:
            # By key, not by ctid: a row another writer updates meanwhile (a media job writing its
            # result) has a new ctid but the same key, and is deleted, as it is now, all the same.
            cursor.execute(
                f"""DELETE FROM {self.table} WHERE {self.column} = %s AND ({key}) IN (
                        SELECT {key} FROM {self.table} WHERE {self.column} = %s LIMIT %s)
                    RETURNING {returning}""",  # noqa: S608 - names are the holders' constants
                [user_id, user_id, batch_size],
            )
            rows = cursor.fetchall()
        counts = {self.name: len(rows)}
        if self.media_columns:
            keys = [storage.key_of(value) for row in rows for value in row]
            counts[f"{self.name}_media_files"] = storage.delete(keys)
        return Step(counts, START if rows else DONE)

    def count(self, user_id: uuid.UUID) -> int:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {self.table} WHERE {self.column} = %s", [user_id])  # noqa: S608
            return cursor.fetchone()[0]

    def export(self, user_id: uuid.UUID) -> Iterator[dict[str, Any]]:
        shown = ", ".join(self.columns) if self.columns else "*"
        key = ", ".join(self.key)
        after: list[Any] = []
        while True:
            resume = f" AND ({key}) > ({', '.join(['%s'] * len(after))})" if after else ""
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT {shown}, {key} FROM {self.table} WHERE {self.column} = %s{resume} "  # noqa: S608
                    f"ORDER BY {key} LIMIT %s",
                    [user_id, *after, EXPORT_PAGE],
                )
                names = [c.name for c in cursor.description]
                page = cursor.fetchall()
            for row in page:
                yield dict(zip(names[: len(names) - len(self.key)], row, strict=False))
            if len(page) < EXPORT_PAGE:
                return
            after = list(page[-1][len(names) - len(self.key) :])

    def media_keys(self, row: dict[str, Any]) -> Iterable[str | None]:
        return (storage.key_of(row.get(column)) for column in self.media_columns)


# The job records: what a job was asked to do names its user.

# A job's payload names its user here: one user (`userId`) or many (`userIds`, a multicast push).
_NAMES_USER = "(payload->>'userId' = %s OR payload->'userIds' ? %s)"


def _mask_job_records(table: str, extra: str) -> Callable[[uuid.UUID, int, str], Step]:
    """Keep the record (an operator still sees that a job ran, and how it ended) without the user
    in it: the payload shrinks to its type, the result and the error go (they may quote what the
    job did for the user); a dead letter also loses its envelope, so it can never run again."""

    def erase(user_id: uuid.UUID, batch_size: int, resume: str) -> Step:
        with connection.cursor() as cursor:
            cursor.execute(
                f"""UPDATE {table} SET payload = jsonb_build_object('type', payload->'type', 'erased', true),
                        error = '(erased with its user)'{extra}
                    WHERE id = ANY(ARRAY(SELECT id FROM {table} WHERE {_NAMES_USER} LIMIT %s))""",  # noqa: S608
                [str(user_id), str(user_id), batch_size],
            )
            masked = cursor.rowcount
        return Step({table: masked}, START if masked else DONE)

    return erase


def _count_job_records(table: str) -> Callable[[uuid.UUID], int]:
    def count(user_id: uuid.UUID) -> int:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {table} WHERE {_NAMES_USER}", [str(user_id), str(user_id)])  # noqa: S608
            return cursor.fetchone()[0]

    return count


MESSAGES = 10  # first: copies of messages (the cleanup's archives) are cleaned after them
LAST = 1000  # the job records go last: the erasure's own record is among them


def register_core() -> None:
    """The core's holdings: the messenger's tables supworker/models/messenger.py maps, and the job records."""
    media = ("media_url", "thumbnail_url")
    for holding in (
        # Only what the user sent: messages of others in the user's chats are theirs.
        table("messages", "messages", "sender_id", media_columns=media, order=MESSAGES),
        table("stories", "stories", "user_id", media_columns=media),
        table("user_sessions", "user_sessions", "user_id"),
        table("user_prekeys", "user_prekeys", "user_id"),
        table("websocket_connections", "websocket_connections", "user_id"),
        table("user_statistics", "user_statistics", "user_id", key=("user_id",)),
    ):
        hold_user_data(holding)
    for name, extra in (("job_runs", ", result = NULL, traceback = ''"), ("dead_letters", ", envelope = NULL")):
        hold_user_data(Holding(name, _mask_job_records(name, extra), count=_count_job_records(name), order=LAST))

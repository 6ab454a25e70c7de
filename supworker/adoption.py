"""Migration operations for a guest in the messenger's database.

The Node API created the six seed tables and keeps writing them. Every change supworker makes
to them is one of these operations, and each of them
- looks before it acts and does only what is missing, so `migrate` works on an empty database,
  on one the API created, on one an earlier supworker created, and again after an interruption;
- takes a table's ACCESS EXCLUSIVE lock only for catalog-only changes (a column with a constant
  default, a default, a name), each under `lock_timeout` and retried with backoff: behind a long
  transaction of the API the migration gives up its place in the lock queue instead of making
  every API query wait behind it;
- builds indexes with CREATE INDEX CONCURRENTLY, which blocks no insert, update or delete.

`pending()` says what an operation would run against a given database without running it:
`manage.py schema_plan` prints that, and `database_forwards` runs exactly that.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import OperationalError, models, transaction
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.operations import AddConstraint, AddField, AddIndex
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState

logger = logging.getLogger(__name__)

LOCK_NOT_AVAILABLE = "55P03"
BRIEF_LOCK = "ACCESS EXCLUSIVE on {table} while the catalog changes (milliseconds; no row is read or rewritten)"
CONCURRENT_BUILD = (
    "SHARE UPDATE EXCLUSIVE on {table} for the whole build: reads and writes go on; "
    "waits for transactions older than it; time grows with the table (about {rows:,} rows)"
)


@dataclass(frozen=True)
class Change:
    """One statement a guest operation would run, and what it would lock."""

    sql: str
    locks: str
    concurrent: bool = False  # CREATE/DROP INDEX CONCURRENTLY: no lock_timeout, blocks no reader or writer


def _one(cursor: Any, sql: str, params: list[Any]) -> Any:
    cursor.execute(sql, params)
    row = cursor.fetchone()
    return None if row is None else row[0]


def table_exists(cursor: Any, table: str) -> bool:
    return _one(cursor, "SELECT to_regclass(%s) IS NOT NULL", [f"{_schema(cursor)}.{table}"])


def _schema(cursor: Any) -> str:
    return _one(cursor, "SELECT current_schema()", [])


def column_facts(cursor: Any, table: str, column: str) -> tuple[bool, str | None] | None:
    """(nullable, default expression) of a column, or None when it does not exist."""
    cursor.execute(
        """SELECT is_nullable = 'YES', column_default FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = %s AND column_name = %s""",
        [table, column],
    )
    row = cursor.fetchone()
    return None if row is None else (row[0], row[1])


def index_validity(cursor: Any, name: str) -> bool | None:
    """True for a usable index, False for one a failed concurrent build left invalid, None for none."""
    return _one(
        cursor,
        """SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE c.relname = %s AND c.relnamespace = current_schema()::regnamespace""",
        [name],
    )


def constraint_exists(cursor: Any, table: str, name: str) -> bool:
    return bool(
        _one(
            cursor,
            "SELECT count(*) FROM pg_constraint WHERE conname = %s AND conrelid = to_regclass(%s)",
            [name, f"{_schema(cursor)}.{table}"],
        )
    )


def run(cursor: Any, change: Change) -> None:
    """Run one change; a locking one under lock_timeout, retried with backoff while the table is busy.

    Each try is a transaction of its own with `SET LOCAL lock_timeout`: the timeout ends with it,
    so nothing stays behind in the session, and it holds behind PgBouncer in transaction mode,
    where a session-level SET could land in one server session and the change run in another.
    """
    config = settings.CONFIG
    if change.concurrent:
        cursor.execute(change.sql)  # waits for no table lock: no lock_timeout, and never in a transaction
        return
    for attempt in range(config.migration_lock_retries + 1):
        try:
            with transaction.atomic(using=cursor.db.alias):
                cursor.execute(f"SET LOCAL lock_timeout = {int(config.migration_lock_timeout_ms)}")
                cursor.execute(change.sql)
            return
        except OperationalError as error:
            if getattr(error.__cause__, "pgcode", None) != LOCK_NOT_AVAILABLE:
                raise
            if attempt == config.migration_lock_retries:
                raise OperationalError(
                    f"gave up after {attempt + 1} tries of {config.migration_lock_timeout_ms} ms: a transaction "
                    f"kept the table locked; run migrate again when it is quieter ({change.sql})"
                ) from error
            pause = min(0.25 * 2**attempt, 15) * random.uniform(0.5, 1)  # noqa: S311 - jitter, not secrecy
            logger.warning(
                "table busy: lock not granted within %d ms, try %d of %d again in %.1f s: %s",
                config.migration_lock_timeout_ms,
                attempt + 1,
                config.migration_lock_retries + 1,
                pause,
                change.sql,
            )
            time.sleep(pause)


class GuestOperation(Operation):
    """Base: state changes as given, database changes as `pending` finds them missing."""

    reduces_to_sql = False
    reversible = False  # supworker never drops what the messenger's database holds
    needs_autocommit = True  # lock_timeout retries and concurrent builds cannot run in a transaction

    def __init__(self, state_operations: list[Operation] | None = None) -> None:
        self.state_operations = state_operations or []

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        for operation in self.state_operations:
            operation.state_forwards(app_label, state)

    def pending(
        self, cursor: Any, app_label: str, schema_editor: BaseDatabaseSchemaEditor, to_state: ProjectState
    ) -> list[Change]:
        raise NotImplementedError

    def unchanged(self) -> str:
        """What `schema_plan` says when this database needs nothing from the operation."""
        return f"{self.describe()}: already so"

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        if self.needs_autocommit and schema_editor.connection.in_atomic_block:
            raise RuntimeError(f"{type(self).__name__} needs a migration with atomic = False")
        with schema_editor.connection.cursor() as cursor:
            for change in self.pending(cursor, app_label, schema_editor, to_state):
                logger.info("%s", change.sql)
                run(cursor, change)

    def database_backwards(self, *args: Any) -> None:
        raise NotImplementedError("supworker's changes to the messenger's tables are not reverted automatically")


class CreateSeedTable(GuestOperation):
    """Create one of the messenger's tables from the seed DDL, unless the API already did."""

    needs_autocommit = False  # a new table waits for no lock

    def __init__(self, table: str, ddl: str, state_operations: list[Operation]) -> None:
        super().__init__(state_operations)
        self.table, self.ddl = table, ddl

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return type(self).__qualname__, [self.table, self.ddl, self.state_operations], {}

    def describe(self) -> str:
        return f"Adopt the messenger's table {self.table} (create it from the seed schema if missing)"

    def unchanged(self) -> str:
        return f"{self.table}: exists, kept as it is"

    def pending(self, cursor: Any, app_label: str, schema_editor: Any, to_state: ProjectState) -> list[Change]:
        if table_exists(cursor, self.table):
            return []
        return [Change(self.ddl, f"nothing: {self.table} is new")]


class AddColumnWithDefault(GuestOperation):
    """Add a column supworker needs to a messenger table: nullable, or with a constant default.

    Since PostgreSQL 11 either is a catalog-only change, however large the table. A column that
    exists (an earlier supworker added it) only gets its database default, if it lacks one.
    """

    def __init__(self, model_name: str, name: str, field: models.Field, definition: str, default: str = "") -> None:
        super().__init__([AddField(model_name, name, field)])
        self.model_name, self.name, self.field, self.definition, self.default = (
            model_name,
            name,
            field,
            definition,
            default,
        )

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (
            type(self).__qualname__,
            [self.model_name, self.name, self.field, self.definition],
            {"default": self.default} if self.default else {},
        )

    def describe(self) -> str:
        return f"Add column {self.name} ({self.definition}) to {self.model_name}"

    def pending(self, cursor: Any, app_label: str, schema_editor: Any, to_state: ProjectState) -> list[Change]:
        table = to_state.apps.get_model(app_label, self.model_name)._meta.db_table
        facts = column_facts(cursor, table, self.name)
        locks = BRIEF_LOCK.format(table=table)
        if facts is None:
            default = f" DEFAULT {self.default}" if self.default else ""
            return [
                Change(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {self.name} {self.definition}{default}", locks)
            ]
        if self.default and facts[1] is None:
            return [Change(f"ALTER TABLE {table} ALTER COLUMN {self.name} SET DEFAULT {self.default}", locks)]
        return []


class MatchSeedColumns(GuestOperation):
    """Database only: bring columns an earlier supworker made stricter back to the seed's shape.

    That supworker created the tables itself with NOT NULL times and random-id defaults, which
    the seed does not have. Dropping NOT NULL or a default is catalog-only; column types stay.
    """

    def __init__(self, table: str, nullable: list[str], without_default: list[str]) -> None:
        super().__init__()
        self.table, self.nullable, self.without_default = table, nullable, without_default

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return type(self).__qualname__, [self.table, self.nullable, self.without_default], {}

    def describe(self) -> str:
        return f"Match the nullability and defaults of {self.table} to the seed schema"

    def pending(self, cursor: Any, app_label: str, schema_editor: Any, to_state: ProjectState) -> list[Change]:
        clauses = []
        for column in self.nullable:
            facts = column_facts(cursor, self.table, column)
            if facts is not None and not facts[0]:
                clauses.append(f"ALTER COLUMN {column} DROP NOT NULL")
        for column in self.without_default:
            facts = column_facts(cursor, self.table, column)
            if facts is not None and facts[1] is not None:
                clauses.append(f"ALTER COLUMN {column} DROP DEFAULT")
        if not clauses:
            return []
        return [Change(f"ALTER TABLE {self.table} " + ", ".join(clauses), BRIEF_LOCK.format(table=self.table))]


class RenameConstraint(GuestOperation):
    """Database only: give a constraint an earlier supworker named the name the seed DDL gives it."""

    def __init__(self, table: str, old_name: str, new_name: str) -> None:
        super().__init__()
        self.table, self.old_name, self.new_name = table, old_name, new_name

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return type(self).__qualname__, [self.table, self.old_name, self.new_name], {}

    def describe(self) -> str:
        return f"Rename constraint {self.old_name} of {self.table} to {self.new_name} where it exists"

    def pending(self, cursor: Any, app_label: str, schema_editor: Any, to_state: ProjectState) -> list[Change]:
        if not constraint_exists(cursor, self.table, self.old_name) or constraint_exists(
            cursor, self.table, self.new_name
        ):
            return []
        sql = f"ALTER TABLE {self.table} RENAME CONSTRAINT {self.old_name} TO {self.new_name}"
        return [Change(sql, BRIEF_LOCK.format(table=self.table))]


class AdoptIndex(GuestOperation):
    """Build an index (or a partial unique constraint, which PostgreSQL keeps as an index) concurrently.

    An index an earlier supworker built under Django's generated name is renamed instead of built
    twice; one a failed concurrent build left invalid is dropped and built again.
    """

    def __init__(self, model_name: str, index: models.Index | models.UniqueConstraint, legacy_name: str = "") -> None:
        state = AddIndex(model_name, index) if isinstance(index, models.Index) else AddConstraint(model_name, index)
        super().__init__([state])
        self.model_name, self.index, self.legacy_name = model_name, index, legacy_name

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        kwargs = {"legacy_name": self.legacy_name} if self.legacy_name else {}
        return type(self).__qualname__, [self.model_name, self.index], kwargs

    def describe(self) -> str:
        return f"Build index {self.index.name} on {self.model_name} concurrently"

    def create_sql(self, model: type[models.Model], schema_editor: BaseDatabaseSchemaEditor) -> str:
        if isinstance(self.index, models.Index):
            return str(self.index.create_sql(model, schema_editor, concurrently=True))
        sql = str(self.index.create_sql(model, schema_editor))
        if not sql.startswith("CREATE UNIQUE INDEX "):
            raise ValueError(f"{self.index.name}: only a conditional unique constraint can be built concurrently")
        return sql.replace("CREATE UNIQUE INDEX ", "CREATE UNIQUE INDEX CONCURRENTLY ", 1)

    def pending(
        self, cursor: Any, app_label: str, schema_editor: BaseDatabaseSchemaEditor, to_state: ProjectState
    ) -> list[Change]:
        model = to_state.apps.get_model(app_label, self.model_name)
        table, name = model._meta.db_table, self.index.name
        valid = index_validity(cursor, name)
        if valid:
            return []
        if valid is None and self.legacy_name and index_validity(cursor, self.legacy_name):
            sql = f"ALTER INDEX {self.legacy_name} RENAME TO {name}"
            return [Change(sql, f"SHARE UPDATE EXCLUSIVE on {self.legacy_name} while the catalog changes")]
        rows = max(_one(cursor, "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table]), 0)
        locks = CONCURRENT_BUILD.format(table=table, rows=rows)
        build = Change(self.create_sql(model, schema_editor), locks, concurrent=True)
        if valid is False:
            drop = Change(f"DROP INDEX CONCURRENTLY IF EXISTS {name}", "nothing the API waits for", concurrent=True)
            return [drop, build]
        return [build]

"""manage.py schema_plan [--check]: what `migrate` would change in this database, and what it would lock.

Django's `migrate --plan` lists migrations and `sqlmigrate` prints one migration's SQL for an
empty database. supworker's changes to the messenger's tables depend on what the database
already holds, so this asks each of them (supworker.adoption) what it would run here, and
prints the SQL of every other pending operation, each with what it locks. It changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState

from supworker.adoption import GuestOperation


class Command(BaseCommand):
    help = "Print what `migrate` would change in this database and what each change locks; change nothing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--check", action="store_true", help="exit with status 1 when migrate has work to do")
        parser.add_argument(
            "--sql", action="store_true", help="also print the SQL of operations on tables supworker creates"
        )
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args: Any, check: bool, sql: bool, database: str, **options: Any) -> None:
        self.show_sql = sql
        connection = connections[database]
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if not plan:
            self.stdout.write("Nothing to change: every migration is applied.")
            return
        # The state `migrate` itself starts its plan from; Django offers it under this name only.
        state = executor._create_project_state(with_applied_migrations=True)  # type: ignore[attr-defined]
        statements = 0
        for migration, _ in plan:
            mode = "" if migration.atomic else " (outside a transaction: each statement commits on its own)"
            self.stdout.write(self.style.MIGRATE_HEADING(f"{migration.app_label}.{migration.name}{mode}"))
            for operation in migration.operations:
                before = state.clone()
                operation.state_forwards(migration.app_label, state)
                statements += self._show(connection, migration.app_label, operation, before, state, migration.atomic)
        self.stdout.write(
            f"\n{len(plan)} migration(s) to apply, {statements} statement(s) to run. Nothing was changed."
        )
        if check:
            raise SystemExit(1)

    def _show(
        self,
        connection: Any,
        app_label: str,
        operation: Operation,
        before: ProjectState,
        after: ProjectState,
        atomic: bool,
    ) -> int:
        if isinstance(operation, GuestOperation):
            with connection.schema_editor(collect_sql=True, atomic=False) as editor, connection.cursor() as cursor:
                changes = operation.pending(cursor, app_label, editor, after)
            if not changes:
                self.stdout.write(f"  {operation.unchanged()}")
            for change in changes:
                self.stdout.write(f"  {change.sql};\n    -- locks: {change.locks}")
            return len(changes)
        if not operation.reduces_to_sql:
            self.stdout.write(f"  {operation.describe()}: Python code, cannot be shown as SQL")
            return 1
        with connection.schema_editor(collect_sql=True, atomic=atomic) as editor:
            operation.database_forwards(app_label, editor, before, after)
        sql = [line for line in editor.collected_sql if line.strip()]
        if not sql:
            self.stdout.write(f"  {operation.describe()}: migration state only, no SQL")
        elif not self.show_sql:
            self.stdout.write(
                f"  {operation.describe()} ({len(sql)} statement(s); locks only tables supworker creates)"
            )
        for line in sql if self.show_sql else []:
            self.stdout.write(f"  {line}\n    -- locks: only tables supworker creates")
        return len(sql)

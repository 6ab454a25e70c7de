"""`manage.py migrate` where supworker is meant to run: in the messenger's own database.

Three starting points, each migrated by `manage.py migrate` in a fresh interpreter as an
operator runs it: an empty database, one the Node API created from the seed schema (with rows),
and one an earlier supworker migrated (with rows). All three end in the same schema, keep every
row and every column type, and take the API's inserts that name only the seed's columns.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest
from psycopg2.extensions import ISOLATION_LEVEL_AUTOCOMMIT

from tests.helpers import run_manage, start_manage, wait_for

pytestmark = pytest.mark.slow

SERVER = {"host": "127.0.0.1", "port": 5440, "user": "supworker", "password": "supworker"}
FIXTURES = Path(__file__).parent / "fixtures"
SEED_SCHEMA = FIXTURES / "messenger_seed_schema.sql"
EARLIER_SUPWORKER = FIXTURES / "supworker_stop10_schema.sql"
SEED_TABLES = ("messages", "stories", "user_sessions", "user_prekeys", "notifications", "temporary_files")
# Tables the messenger owns beyond the seed, by a contract supworker documents (docs/notifications.md).
CONTRACT_TABLES = ("muted_chats",)
# What supworker adds to the seed's columns: each nullable or with a constant default.
ADDED_COLUMNS = {
    ("messages", "media_status"),
    ("messages", "media_error"),
    ("notifications", "job_id"),
    ("notifications", "recipient"),
    ("notifications", "error"),
    ("notifications", "provider_message_id"),
    ("notifications", "claimed_by"),
}
# How the Node API writes: every statement names only the seed's columns.
API_INSERTS = {
    "messages": "INSERT INTO messages (id, sender_id, chat_id, content, media_url, thumbnail_url, media_metadata) "
    "VALUES (%(id)s, %(user)s, %(user)s, 'hello', NULL, NULL, '{\"w\": 1}')",
    "stories": "INSERT INTO stories (id, user_id, media_url) VALUES (%(id)s, %(user)s, 'media/s.jpg')",
    "user_sessions": "INSERT INTO user_sessions (id, user_id, device_id, last_active_at) "
    "VALUES (%(id)s, %(user)s, 'phone', NOW())",
    "user_prekeys": "INSERT INTO user_prekeys (id, user_id, prekey_id, public_key) VALUES (%(id)s, %(user)s, 1, 'k')",
    "notifications": "INSERT INTO notifications (id, user_id, type, title, body, success) "
    "VALUES (%(id)s, %(user)s, 'push', 't', 'b', true)",
    "temporary_files": "INSERT INTO temporary_files (id, file_path) VALUES (%(id)s, '/tmp/upload-1')",
}
EARLIER_NOTIFICATION_INSERT = (
    "INSERT INTO notifications (id, user_id, type, title, body, success, job_id, recipient, error, "
    "provider_message_id) VALUES (%(id)s, %(user)s, 'push', 't', 'b', true, %(id)s, 'device 1', '', '')"
)


def connect(dbname: str) -> psycopg2.extensions.connection:
    connection = psycopg2.connect(dbname=dbname, **SERVER)
    connection.set_isolation_level(ISOLATION_LEVEL_AUTOCOMMIT)
    return connection


def query(dbname: str, sql: str, params: tuple | list = ()) -> list[tuple]:
    """One statement in autocommit mode (psycopg2's `with connection` would open a transaction)."""
    connection = connect(dbname)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def database_url(dbname: str) -> dict[str, str]:
    return {"DATABASE_URL": f"postgres://supworker:supworker@127.0.0.1:5440/{dbname}"}


def drop_database(name: str) -> None:
    """DROP ... WITH (FORCE) ends the other sessions on the database, but the test role may not end
    an autovacuum worker's (that takes pg_signal_backend): such a worker finishes in moments."""

    def dropped() -> bool:
        try:
            query("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg2.errors.InsufficientPrivilege:
            return False
        return True

    wait_for(dropped, 60, f"database {name} to be dropped (an autovacuum worker on it)", interval=0.5)


@pytest.fixture
def new_database() -> Iterator[str]:
    name = f"supworker_schema_{uuid.uuid4().hex[:8]}"
    query("postgres", f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        drop_database(name)


def load(dbname: str, sql_file: Path) -> None:
    query(dbname, sql_file.read_text())


def api_rows(dbname: str, count: int = 3, inserts: dict[str, str] = API_INSERTS) -> dict[str, set[str]]:
    """Insert rows the way the Node API does; return their ids per table."""
    ids: dict[str, set[str]] = {}
    for table, sql in inserts.items():
        ids[table] = set()
        for n in range(count):
            row_id = str(uuid.uuid4())
            params = {"id": row_id, "user": str(uuid.uuid4())}
            if table == "user_prekeys":
                sql_n = sql.replace(", 1, ", f", {n + 1}, ")
                query(dbname, sql_n, params)
            else:
                query(dbname, sql, params)
            ids[table].add(row_id)
    return ids


def ids_in(dbname: str) -> dict[str, set[str]]:
    return {table: {str(row[0]) for row in query(dbname, f"SELECT id FROM {table}")} for table in SEED_TABLES}  # noqa: S608


def columns(dbname: str) -> dict[tuple[str, str], tuple]:
    rows = query(
        dbname,
        """SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns
           WHERE table_schema = 'public' AND table_name = ANY(%s)""",
        [list(SEED_TABLES)],
    )
    return {(table, column): rest for table, column, *rest in rows}


def indexes(dbname: str) -> dict[str, str]:
    rows = query(
        dbname,
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = ANY(%s)",
        [list(SEED_TABLES)],
    )
    return dict(rows)


def constraints(dbname: str) -> dict[tuple[str, str], str]:
    rows = query(
        dbname,
        """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
           WHERE conrelid::regclass::text = ANY(%s)""",
        [list(SEED_TABLES)],
    )
    return {(table, name): definition for table, name, definition in rows}


def migrate(dbname: str, **env: str) -> subprocess.CompletedProcess:
    result = run_manage("migrate", "--no-input", env=database_url(dbname) | env, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def reference_schema() -> Iterator[tuple[dict, dict, dict]]:
    """The schema `migrate` gives an empty database: what every other starting point must end in."""
    name = f"supworker_schema_ref_{uuid.uuid4().hex[:8]}"
    query("postgres", f'CREATE DATABASE "{name}"')
    try:
        migrate(name)
        yield columns(name), indexes(name), constraints(name)
    finally:
        drop_database(name)


def test_an_empty_database_gets_exactly_the_seed_tables_and_what_supworker_adds(new_database, reference_schema):
    load(new_database, SEED_SCHEMA)
    seed_columns, seed_constraints = columns(new_database), constraints(new_database)
    reference_columns, reference_indexes, reference_constraints = reference_schema

    assert {key: reference_columns[key] for key in seed_columns} == seed_columns, "the seed's columns as it has them"
    assert set(reference_columns) - set(seed_columns) == ADDED_COLUMNS
    for key in ADDED_COLUMNS:
        _, nullable, default = reference_columns[key]
        assert nullable == "YES" or default is not None, f"{key} would break the API's inserts"
    assert seed_constraints.items() <= reference_constraints.items(), "the seed's UNIQUE(user_id, prekey_id) kept"
    assert reference_columns["messages", "created_at"][0] == "timestamp without time zone"
    # The cleanups walk these columns in batches: each needs an index that starts with it.
    for table, column in [
        ("messages", "created_at"),
        ("stories", "created_at"),
        ("stories", "deleted_at"),
        ("user_sessions", "last_active_at"),
        ("user_prekeys", "used_at"),
        ("temporary_files", "created_at"),
    ]:
        assert any(
            f"ON public.{table} " in d and re.search(rf"\({column}(, id)?\)", d) for d in reference_indexes.values()
        )


def test_a_database_the_api_created_is_adopted_with_every_row(new_database, reference_schema):
    load(new_database, SEED_SCHEMA)
    before = api_rows(new_database)
    seed_columns = columns(new_database)

    first = migrate(new_database)
    assert "Applying supworker.0006_adopt_messenger_tables" in first.stdout

    assert ids_in(new_database) == before, "every row kept"
    after = columns(new_database)
    assert {key: after[key] for key in seed_columns} == seed_columns, "no existing column changed"
    assert (after, indexes(new_database), constraints(new_database)) == reference_schema
    tables = {row[0] for row in query(new_database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert "fcm_django_fcmdevice" not in tables, "fcm_django's swapped-out model got a table of its own"

    api_rows(new_database, count=1)  # the API goes on writing as before
    again = migrate(new_database)
    assert "No migrations to apply" in again.stdout


def test_a_database_an_earlier_supworker_migrated_is_brought_forward(new_database, reference_schema):
    load(new_database, EARLIER_SUPWORKER)
    # That schema refused the API's notification rows (recipient, error and provider_message_id
    # were NOT NULL without a default): its rows were supworker's own.
    before = api_rows(new_database, inserts=API_INSERTS | {"notifications": EARLIER_NOTIFICATION_INSERT})
    earlier_types = {key: facts[0] for key, facts in columns(new_database).items()}

    migrate(new_database)

    assert ids_in(new_database) == before, "every row kept"
    after = columns(new_database)
    assert {key: facts[0] for key, facts in after.items()} == earlier_types, "every column keeps its type"
    reference_columns, reference_indexes, reference_constraints = reference_schema
    # Apart from types (timestamptz, varchar) and the name of the now() its defaults call, the
    # same columns with the same nullability and defaults, the same index names, constraints.
    for key, (_type, nullable, default) in reference_columns.items():
        assert after[key][1] == nullable, key
        if default is None or "now()" not in default:
            assert after[key][2] == default, key
    assert set(after) == set(reference_columns)
    assert set(indexes(new_database)) == set(reference_indexes)
    assert constraints(new_database) == reference_constraints
    applied = {row[0] for row in query(new_database, "SELECT name FROM django_migrations WHERE app = 'supworker'")}
    assert "0001_squashed_0005_job_runs_finished_index" in applied and "0006_adopt_messenger_tables" in applied

    api_rows(new_database, count=1)
    assert "No migrations to apply" in migrate(new_database).stdout


def test_the_api_inserts_into_messages_while_migrate_builds_its_indexes(new_database, tmp_path):
    load(new_database, SEED_SCHEMA)
    api_rows(new_database)
    # A transaction of the API that is old when the index build starts: CREATE INDEX
    # CONCURRENTLY waits for it to end before it finishes, which holds the build open.
    old_reader = psycopg2.connect(dbname=new_database, **SERVER)
    old_reader.set_session(isolation_level="REPEATABLE READ")
    old_reader.cursor().execute("SELECT count(*) FROM temporary_files")
    log = tmp_path / "migrate.log"
    process = start_manage("migrate", "--no-input", log_path=log, env=database_url(new_database))
    try:
        building = "SELECT phase FROM pg_stat_progress_create_index WHERE relid = 'messages'::regclass"
        wait_for(lambda: query(new_database, building), 60, "an index build on messages")

        api = connect(new_database)
        with api.cursor() as cursor:
            cursor.execute("SET lock_timeout = '20s'")  # a failure, not a measurement: it must not wait at all
            cursor.execute(API_INSERTS["messages"], {"id": str(uuid.uuid4()), "user": str(uuid.uuid4())})
        api.close()
        assert query(new_database, building), "the insert committed while the index was still being built"
    finally:
        old_reader.rollback()
        old_reader.close()
    assert process.wait(timeout=120) == 0, log.read_text()
    assert query(new_database, "SELECT count(*) FROM messages") == [(4,)]


def test_a_busy_table_makes_migrate_wait_and_retry_instead_of_queueing_the_api(new_database, tmp_path):
    load(new_database, SEED_SCHEMA)
    api_rows(new_database)
    # A long transaction of the API that has read notifications: ALTER TABLE cannot have its lock.
    long_transaction = psycopg2.connect(dbname=new_database, **SERVER)
    long_transaction.cursor().execute("SELECT count(*) FROM notifications")
    env = database_url(new_database) | {"MIGRATION_LOCK_TIMEOUT_MS": "100"}
    log = tmp_path / "migrate.log"
    process = start_manage("migrate", "--no-input", log_path=log, env=env)
    try:
        wait_for(lambda: "table busy" in log.read_text(), 120, "migrate to report the busy table")
        # Between its tries the API's writes go through.
        api = connect(new_database)
        with api.cursor() as cursor:
            cursor.execute("SET lock_timeout = '20s'")
            cursor.execute(API_INSERTS["notifications"], {"id": str(uuid.uuid4()), "user": str(uuid.uuid4())})
        api.close()
        assert process.poll() is None, "migrate waits while the transaction lasts"
    finally:
        long_transaction.rollback()
        long_transaction.close()
    assert process.wait(timeout=120) == 0, log.read_text()
    assert ("notifications", "claimed_by") in columns(new_database)


def test_migrate_gives_up_with_a_clear_error_when_the_table_stays_busy(new_database):
    load(new_database, SEED_SCHEMA)
    long_transaction = psycopg2.connect(dbname=new_database, **SERVER)
    long_transaction.cursor().execute("SELECT count(*) FROM notifications")
    try:
        result = run_manage(
            "migrate",
            "--no-input",
            env=database_url(new_database) | {"MIGRATION_LOCK_TIMEOUT_MS": "50", "MIGRATION_LOCK_RETRIES": "2"},
            timeout=120,
        )
    finally:
        long_transaction.rollback()
        long_transaction.close()
    assert result.returncode != 0
    assert "gave up after 3 tries of 50 ms" in result.stderr and "ALTER TABLE notifications" in result.stderr
    # What it could do before, it did; run again, it finishes the rest.
    assert migrate(new_database).returncode == 0
    assert ("notifications", "claimed_by") in columns(new_database)


def test_schema_plan_tells_what_migrate_would_change_and_changes_nothing(new_database):
    load(new_database, SEED_SCHEMA)
    before = (columns(new_database), indexes(new_database))

    plan = run_manage("schema_plan", "--check", env=database_url(new_database), timeout=120)

    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert (
        "ALTER TABLE notifications ADD COLUMN IF NOT EXISTS recipient varchar(255) NOT NULL DEFAULT ''" in plan.stdout
    )
    assert 'CREATE INDEX CONCURRENTLY "messages_created_id_idx"' in plan.stdout
    assert "messages: exists, kept as it is" in plan.stdout
    assert "Create model JobRun" in plan.stdout
    assert (columns(new_database), indexes(new_database)) == before, "a plan changes nothing"

    migrate(new_database)
    done = run_manage("schema_plan", "--check", env=database_url(new_database), timeout=120)
    assert done.returncode == 0 and "Nothing to change" in done.stdout, done.stdout


def test_every_migration_step_on_a_messenger_table_is_made_as_a_guest():
    """A plain Django operation on a seed table (AddIndex, AlterField ...) would lock or rewrite it."""
    from django.apps import apps
    from django.db.migrations.loader import MigrationLoader

    from supworker.adoption import GuestOperation

    loader = MigrationLoader(None, ignore_no_migrations=True)
    seed_models = {
        (model._meta.app_label, model._meta.model_name)
        for model in apps.get_models()
        if model._meta.db_table in SEED_TABLES + CONTRACT_TABLES
    }
    assert len(seed_models) == len(SEED_TABLES + CONTRACT_TABLES)
    plain = [
        f"{app}.{name}: {operation.describe()}"
        for (app, name), migration in loader.disk_migrations.items()
        for operation in migration.operations
        if not isinstance(operation, GuestOperation)
        and (app, getattr(operation, "model_name", getattr(operation, "name", "")).lower()) in seed_models
    ]
    assert plain == []


USER, CHAT = str(uuid.uuid4()), str(uuid.uuid4())


def muted_chats_shape(dbname: str) -> tuple[list[tuple], list[tuple]]:
    columns = query(
        dbname,
        """SELECT column_name, data_type, is_nullable FROM information_schema.columns
           WHERE table_schema = 'public' AND table_name = 'muted_chats' ORDER BY column_name""",
    )
    constraints = query(
        dbname,
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'muted_chats'::regclass ORDER BY conname",
    )
    return columns, constraints


def test_muted_chats_is_created_as_its_contract_says_where_missing(new_database):
    load(new_database, SEED_SCHEMA)
    migrate(new_database)
    columns, constraints = muted_chats_shape(new_database)
    assert columns == [
        ("chat_id", "uuid", "NO"),
        ("mode", "text", "NO"),
        ("until", "timestamp with time zone", "YES"),
        ("user_id", "uuid", "NO"),
    ]
    assert ("muted_chats_pkey", "PRIMARY KEY (user_id, chat_id)") in constraints
    query(new_database, "INSERT INTO muted_chats (user_id, chat_id, mode) VALUES (%s, %s, 'silent')", [USER, CHAT])
    with pytest.raises(psycopg2.errors.CheckViolation):
        query(new_database, "INSERT INTO muted_chats (user_id, chat_id, mode) VALUES (%s, %s, 'loud')", [CHAT, USER])


def test_muted_chats_the_messenger_made_first_is_kept_with_its_rows(new_database):
    load(new_database, SEED_SCHEMA)
    # The messenger's own version of the table: the contract's columns and one of its own.
    query(
        new_database,
        """CREATE TABLE muted_chats (user_id uuid NOT NULL, chat_id uuid NOT NULL, mode text NOT NULL,
           until timestamptz, muted_at timestamptz DEFAULT now(), PRIMARY KEY (user_id, chat_id))""",
    )
    row = [str(uuid.uuid4()), str(uuid.uuid4())]
    query(new_database, "INSERT INTO muted_chats (user_id, chat_id, mode) VALUES (%s, %s, 'skip')", row)

    result = migrate(new_database)

    assert "Applying notifications.0005_muted_chats" in result.stdout
    assert query(new_database, "SELECT user_id::text, chat_id::text, mode FROM muted_chats") == [(*row, "skip")]
    assert ("muted_at", "timestamp with time zone", "YES") in muted_chats_shape(new_database)[0]


# Tables the cleanup app created and held until their models moved to the apps they belong to.
MOVED_MODELS = {
    "websocketconnection": ("websocket_connections", "supworker"),
    "userstatistics": ("user_statistics", "supworker"),
    "globalstatistics": ("global_statistics", "supworker"),
    "healthcheckresult": ("health_check_results", "monitoring"),
}
MOVE_MIGRATIONS = (
    ("supworker", "0007_messenger_tables_from_cleanup"),
    ("monitoring", "0002_health_check_results_from_cleanup"),
    ("cleanup", "0003_move_tables_to_their_apps"),
)


def test_models_moved_between_apps_keep_their_tables_rows_and_permissions(new_database):
    load(new_database, EARLIER_SUPWORKER)  # it has cleanup's migrations of these tables applied
    query(new_database, "INSERT INTO websocket_connections (user_id, server_id) VALUES (gen_random_uuid(), 'gw-1')")
    query(
        new_database,
        "INSERT INTO user_statistics (user_id, messages_sent, stories, active_sessions) "
        "VALUES (gen_random_uuid(), 3, 0, 1)",
    )
    query(
        new_database,
        "INSERT INTO global_statistics (users, messages, messages_last_24h, stories, active_sessions) "
        "VALUES (1, 3, 1, 0, 1)",
    )
    query(new_database, "INSERT INTO health_check_results (healthy, checks) VALUES (true, '{}')")
    # What that release's post_migrate made, and an operator granted: a group allowed to view them.
    ((group,),) = query(new_database, "INSERT INTO auth_group (name) VALUES ('operators') RETURNING id")
    for model in MOVED_MODELS:
        ((content_type,),) = query(
            new_database,
            "INSERT INTO django_content_type (app_label, model) VALUES ('cleanup', %s) RETURNING id",
            [model],
        )
        ((permission,),) = query(
            new_database,
            "INSERT INTO auth_permission (name, content_type_id, codename) VALUES (%s, %s, %s) RETURNING id",
            [f"Can view {model}", content_type, f"view_{model}"],
        )
        query(
            new_database,
            "INSERT INTO auth_group_permissions (group_id, permission_id) VALUES (%s, %s)",
            [group, permission],
        )
    tables = [table for table, _ in MOVED_MODELS.values()]
    storage_of_tables = "SELECT relname, oid, relfilenode FROM pg_class WHERE relname = ANY(%s)"
    before = query(new_database, storage_of_tables, [tables])

    migrate(new_database)

    assert query(new_database, storage_of_tables, [tables]) == before, "no table dropped, created or rewritten"
    counts = [query(new_database, f"SELECT count(*) FROM {table}")[0][0] for table in tables]  # noqa: S608
    assert counts == [1, 1, 1, 1], "every row kept"
    granted = query(
        new_database,
        """SELECT ct.app_label, ct.model FROM auth_group_permissions gp
           JOIN auth_permission p ON p.id = gp.permission_id
           JOIN django_content_type ct ON ct.id = p.content_type_id""",
    )
    assert sorted(granted) == sorted((app, model) for model, (_, app) in MOVED_MODELS.items())
    for app, name in MOVE_MIGRATIONS:
        shown = run_manage("sqlmigrate", app, name, env=database_url(new_database), timeout=120)
        assert shown.returncode == 0, shown.stderr
        statements = [line for line in shown.stdout.splitlines() if line and not line.startswith("--")]
        assert statements in ([], ["BEGIN;", "COMMIT;"]), shown.stdout

"""The migrations build the messenger's schema on a clean PostgreSQL database, and undo it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2.extensions import ISOLATION_LEVEL_AUTOCOMMIT

from tests.helpers import run_manage

SERVER = {"host": "127.0.0.1", "port": 5440, "user": "supworker", "password": "supworker"}

# The messenger's tables and columns, with PostgreSQL's names for their types.
EXPECTED_COLUMNS = {
    "messages": {
        "id": "uuid",
        "sender_id": "uuid",
        "chat_id": "uuid",
        "content": "text",
        "media_url": "text",
        "thumbnail_url": "text",
        "media_metadata": "jsonb",
        "created_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
        "deleted_at": "timestamp with time zone",
        "media_status": "character varying",
        "media_error": "text",
    },
    "stories": {
        "id": "uuid",
        "user_id": "uuid",
        "media_url": "text",
        "thumbnail_url": "text",
        "created_at": "timestamp with time zone",
        "deleted_at": "timestamp with time zone",
    },
    "user_sessions": {
        "id": "uuid",
        "user_id": "uuid",
        "device_id": "text",
        "last_active_at": "timestamp with time zone",
        "is_active": "boolean",
        "created_at": "timestamp with time zone",
    },
    "user_prekeys": {
        "id": "uuid",
        "user_id": "uuid",
        "prekey_id": "integer",
        "public_key": "text",
        "used_at": "timestamp with time zone",
        "created_at": "timestamp with time zone",
    },
    "notifications": {
        "id": "uuid",
        "user_id": "uuid",
        "type": "character varying",
        "title": "text",
        "body": "text",
        "success": "boolean",
        "created_at": "timestamp with time zone",
    },
    "temporary_files": {"id": "uuid", "file_path": "text", "created_at": "timestamp with time zone"},
}
SERVICE_TABLES = {"job_runs", "dead_letters", "fcm_devices"}


@pytest.fixture
def fresh_database() -> Iterator[str]:
    name = f"supworker_migrations_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dbname="postgres", **SERVER)
    admin.set_isolation_level(ISOLATION_LEVEL_AUTOCOMMIT)
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def query(dbname: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(dbname=dbname, **SERVER) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def database_url(dbname: str) -> dict[str, str]:
    return {"DATABASE_URL": f"postgres://supworker:supworker@127.0.0.1:5440/{dbname}"}


@pytest.mark.slow
def test_migrations_build_the_messenger_schema_and_reverse(fresh_database):
    env = database_url(fresh_database)
    migrated = run_manage("migrate", "--no-input", env=env, timeout=120)
    assert migrated.returncode == 0, migrated.stderr

    tables = {row[0] for row in query(fresh_database, "SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert set(EXPECTED_COLUMNS) | SERVICE_TABLES <= tables
    assert "fcm_django_fcmdevice" not in tables, "fcm_django's swapped-out model got a table of its own"
    for table, expected in EXPECTED_COLUMNS.items():
        rows = query(
            fresh_database,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
            (table,),
        )
        actual = dict(rows)
        assert {column: actual.get(column) for column in expected} == expected, table

    unique = query(
        fresh_database,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'user_prekeys'::regclass AND contype='u'",
    )
    assert ("UNIQUE (user_id, prekey_id)",) in unique

    indexed = {row[0] for row in query(fresh_database, "SELECT indexdef FROM pg_indexes WHERE schemaname='public'")}
    # The cleanups walk these columns in batches: each needs an index that starts with it
    # (they are (column, id) indexes, so a batch resumes after the last row it deleted).
    for table, column in [
        ("messages", "created_at"),
        ("stories", "created_at"),
        ("stories", "deleted_at"),
        ("user_sessions", "last_active_at"),
        ("user_prekeys", "used_at"),
        ("temporary_files", "created_at"),
        ("websocket_connections", "last_heartbeat_at"),
    ]:
        assert any(f"ON public.{table} " in d and re.search(rf"\({column}(, id)?\)", d) for d in indexed), (
            f"{table}.{column}"
        )

    unchanged = run_manage("makemigrations", "--check", "--dry-run", env=env)
    assert unchanged.returncode == 0, "models changed without a migration:\n" + unchanged.stdout

    for app in ("notifications", "supworker"):
        reversed_ = run_manage("migrate", app, "zero", "--no-input", env=env, timeout=120)
        assert reversed_.returncode == 0, reversed_.stderr
    remaining = {row[0] for row in query(fresh_database, "SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert not (set(EXPECTED_COLUMNS) | SERVICE_TABLES) & remaining


@pytest.mark.django_db
def test_rows_inserted_by_the_messenger_api_get_database_defaults():
    """The Node API inserts without id or timestamps; the database fills them in."""
    from django.db import connection

    from supworker.models import Message, UserSession

    sender, chat, user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO messages (sender_id, chat_id, content) VALUES (%s, %s, 'hi') RETURNING id", [sender, chat]
        )
        message_id = cur.fetchone()[0]
        cur.execute("INSERT INTO user_sessions (user_id) VALUES (%s) RETURNING id", [user])
        session_id = cur.fetchone()[0]

    message = Message.objects.get(pk=message_id)
    assert message.created_at is not None and message.updated_at is not None
    assert message.media_status is None and message.media_error == ""
    session = UserSession.objects.get(pk=session_id)
    assert session.is_active is True and session.created_at is not None

# websocket_connections, user_statistics and global_statistics move here from the cleanup app:
# state only (their tables stay as cleanup's migrations made them), and their content types follow.
# cleanup.0003 deletes them from cleanup's state after this.

import uuid

import django.contrib.postgres.functions
import django.db.models.functions.datetime
from django.db import migrations, models

from supworker.moved_models import MoveContentTypes


class Migration(migrations.Migration):

    dependencies = [
        ("supworker", "0006_adopt_messenger_tables"),
        ("cleanup", "0002_keyset_indexes"),  # the tables exist, in their last shape
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="GlobalStatistics",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("computed_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), db_index=True)),
                        ("users", models.PositiveBigIntegerField()),
                        ("messages", models.PositiveBigIntegerField()),
                        ("messages_last_24h", models.PositiveBigIntegerField()),
                        ("stories", models.PositiveBigIntegerField()),
                        ("active_sessions", models.PositiveBigIntegerField()),
                    ],
                    options={
                        "verbose_name_plural": "global statistics",
                        "db_table": "global_statistics",
                    },
                ),
                migrations.CreateModel(
                    name="UserStatistics",
                    fields=[
                        ("user_id", models.UUIDField(primary_key=True, serialize=False)),
                        ("messages_sent", models.PositiveBigIntegerField(default=0)),
                        ("stories", models.PositiveIntegerField(default=0)),
                        ("active_sessions", models.PositiveIntegerField(default=0)),
                        ("last_activity_at", models.DateTimeField(blank=True, null=True)),
                        ("updated_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                    ],
                    options={
                        "verbose_name_plural": "user statistics",
                        "db_table": "user_statistics",
                    },
                ),
                migrations.CreateModel(
                    name="WebsocketConnection",
                    fields=[
                        ("id", models.UUIDField(db_default=django.contrib.postgres.functions.RandomUUID(), default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ("user_id", models.UUIDField(db_index=True)),
                        ("device_id", models.TextField(blank=True, null=True)),
                        ("session_id", models.UUIDField(blank=True, db_index=True, help_text="user_sessions.id", null=True)),
                        ("server_id", models.CharField(help_text="the gateway process holding the socket", max_length=128)),
                        ("connected_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), db_index=True, editable=False)),
                        ("last_heartbeat_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                    ],
                    options={
                        "db_table": "websocket_connections",
                        "indexes": [models.Index(fields=["last_heartbeat_at", "id"], name="websockets_heartbeat_id_idx")],
                    },
                ),
            ],
            database_operations=[],
        ),
        MoveContentTypes("cleanup", "supworker", ["globalstatistics", "userstatistics", "websocketconnection"]),
    ]

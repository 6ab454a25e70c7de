# supworker's first five migrations in one, with the messenger's tables adopted instead of created.
#
# Those migrations created the messenger's five tables here (and notifications in the
# notifications app) in supworker's own shape, so `migrate` failed on a database the Node API had
# already created. Now the tables are created from the seed schema only where they are missing,
# and what supworker adds to them comes in 0006. A database migrated by those five migrations
# counts this one as applied (`replaces`) and is brought forward by 0006.

import uuid

import django.db.models.functions.datetime
from django.db import migrations, models

import supworker.models.fields
from supworker import messenger_ddl
from supworker.adoption import CreateSeedTable


def seed_id():
    return ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False))


def seed_created_at():
    return (
        "created_at",
        supworker.models.fields.MessengerTimestamp(
            db_default=django.db.models.functions.datetime.Now(), editable=False, null=True
        ),
    )


class Migration(migrations.Migration):
    initial = True

    replaces = [
        ("supworker", "0001_initial"),
        ("supworker", "0002_job_links"),
        ("supworker", "0003_message_messages_media_url_idx_and_more"),
        ("supworker", "0004_keyset_indexes"),
        ("supworker", "0005_job_runs_finished_index"),
    ]

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="DeadLetter",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("job_id", models.CharField(blank=True, db_index=True, default="", max_length=128)),
                ("job_type", models.CharField(blank=True, db_index=True, default="", max_length=64)),
                (
                    "source",
                    models.CharField(
                        choices=[("consumer", "rejected by the consumer"), ("worker", "failed in a worker")],
                        max_length=16,
                    ),
                ),
                ("routing_key", models.CharField(blank=True, default="", max_length=255)),
                ("payload", models.JSONField(blank=True, help_text="secrets masked", null=True)),
                ("envelope", models.JSONField(blank=True, editable=False, null=True)),
                ("error", models.TextField()),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("first_attempt_at", models.DateTimeField(blank=True, null=True)),
                (
                    "failed_at",
                    models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), db_index=True),
                ),
                ("requeued_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={"db_table": "dead_letters"},
        ),
        migrations.CreateModel(
            name="JobRun",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("job_id", models.CharField(max_length=128, unique=True)),
                (
                    "job_type",
                    models.CharField(db_index=True, help_text="e.g. media.image, notification.push", max_length=64),
                ),
                ("queue", models.CharField(max_length=64)),
                (
                    "rq_job_id",
                    models.CharField(blank=True, default="", help_text="the RQ job (batch) it ran in", max_length=64),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("queued", "Queued"),
                            ("running", "Running"),
                            ("retrying", "Retrying"),
                            ("succeeded", "Succeeded"),
                            ("failed", "Failed"),
                        ],
                        default="queued",
                        max_length=16,
                    ),
                ),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("payload", models.JSONField(blank=True, default=dict, help_text="secrets masked")),
                ("result", models.JSONField(blank=True, null=True)),
                ("error", models.TextField(blank=True, default="")),
                ("traceback", models.TextField(blank=True, default="")),
                ("enqueued_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("duration_ms", models.PositiveIntegerField(blank=True, null=True)),
            ],
            options={
                "db_table": "job_runs",
                "indexes": [
                    models.Index(fields=["status", "enqueued_at"], name="job_runs_status_idx"),
                    models.Index(fields=["job_type", "finished_at"], name="job_runs_type_finished_idx"),
                    models.Index(fields=["finished_at", "id"], name="job_runs_finished_id_idx"),
                ],
            },
        ),
        CreateSeedTable(
            "messages",
            messenger_ddl.MESSAGES,
            [
                migrations.CreateModel(
                    name="Message",
                    fields=[
                        seed_id(),
                        ("sender_id", models.UUIDField()),
                        ("chat_id", models.UUIDField()),
                        ("content", models.TextField(blank=True, null=True)),
                        ("media_url", models.TextField(blank=True, null=True)),
                        ("thumbnail_url", models.TextField(blank=True, null=True)),
                        ("media_metadata", models.JSONField(blank=True, null=True)),
                        seed_created_at(),
                        (
                            "updated_at",
                            supworker.models.fields.MessengerTimestamp(
                                auto_now=True, db_default=django.db.models.functions.datetime.Now(), null=True
                            ),
                        ),
                        ("deleted_at", supworker.models.fields.MessengerTimestamp(blank=True, null=True)),
                    ],
                    options={"db_table": "messages"},
                ),
            ],
        ),
        CreateSeedTable(
            "stories",
            messenger_ddl.STORIES,
            [
                migrations.CreateModel(
                    name="Story",
                    fields=[
                        seed_id(),
                        ("user_id", models.UUIDField()),
                        ("media_url", models.TextField(blank=True, null=True)),
                        ("thumbnail_url", models.TextField(blank=True, null=True)),
                        seed_created_at(),
                        ("deleted_at", supworker.models.fields.MessengerTimestamp(blank=True, null=True)),
                    ],
                    options={"db_table": "stories", "verbose_name_plural": "stories"},
                ),
            ],
        ),
        CreateSeedTable(
            "user_sessions",
            messenger_ddl.USER_SESSIONS,
            [
                migrations.CreateModel(
                    name="UserSession",
                    fields=[
                        seed_id(),
                        ("user_id", models.UUIDField()),
                        ("device_id", models.TextField(blank=True, null=True)),
                        ("last_active_at", supworker.models.fields.MessengerTimestamp(blank=True, null=True)),
                        ("is_active", models.BooleanField(db_default=True, default=True, null=True)),
                        seed_created_at(),
                    ],
                    options={"db_table": "user_sessions"},
                ),
            ],
        ),
        CreateSeedTable(
            "user_prekeys",
            messenger_ddl.USER_PREKEYS,
            [
                migrations.CreateModel(
                    name="UserPrekey",
                    fields=[
                        seed_id(),
                        ("user_id", models.UUIDField()),
                        ("prekey_id", models.IntegerField()),
                        ("public_key", models.TextField()),
                        ("used_at", supworker.models.fields.MessengerTimestamp(blank=True, null=True)),
                        seed_created_at(),
                    ],
                    options={
                        "db_table": "user_prekeys",
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("user_id", "prekey_id"), name="user_prekeys_user_id_prekey_id_key"
                            )
                        ],
                    },
                ),
            ],
        ),
        CreateSeedTable(
            "temporary_files",
            messenger_ddl.TEMPORARY_FILES,
            [
                migrations.CreateModel(
                    name="TemporaryFile",
                    fields=[seed_id(), ("file_path", models.TextField()), seed_created_at()],
                    options={"db_table": "temporary_files"},
                ),
            ],
        ),
    ]

# The notifications app's first two migrations in one, with the messenger's `notifications`
# table adopted instead of created (see supworker's 0001_squashed_0005 for why). What supworker
# adds to that table comes in 0003. A database migrated by the two counts this one as applied.

import uuid

import django.db.models.functions.datetime
from django.db import migrations, models

import supworker.models.fields
from supworker import messenger_ddl
from supworker.adoption import CreateSeedTable


class Migration(migrations.Migration):
    initial = True

    replaces = [("notifications", "0001_initial"), ("notifications", "0002_notification_claimed_by")]

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Device",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(blank=True, max_length=255, null=True, verbose_name="Name")),
                (
                    "active",
                    models.BooleanField(
                        default=True, help_text="Inactive devices will not be sent notifications", verbose_name="Is active"
                    ),
                ),
                ("date_created", models.DateTimeField(auto_now_add=True, null=True, verbose_name="Creation date")),
                (
                    "device_id",
                    models.CharField(
                        blank=True,
                        db_index=True,
                        help_text="Unique device identifier",
                        max_length=255,
                        null=True,
                        verbose_name="Device ID",
                    ),
                ),
                ("registration_id", models.TextField(unique=True, verbose_name="Registration token")),
                (
                    "type",
                    models.CharField(choices=[("ios", "ios"), ("android", "android"), ("web", "web")], max_length=10),
                ),
                ("user_id", models.UUIDField(blank=True, db_index=True, null=True)),
            ],
            options={
                "verbose_name": "FCM device",
                "db_table": "fcm_devices",
                "abstract": False,
                "indexes": [models.Index(fields=["registration_id", "user_id"], name="fcm_devices_token_user_idx")],
            },
        ),
        CreateSeedTable(
            "notifications",
            messenger_ddl.NOTIFICATIONS,
            [
                migrations.CreateModel(
                    name="Notification",
                    fields=[
                        ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ("user_id", models.UUIDField()),
                        ("type", models.TextField(help_text="push, email or sms")),
                        ("title", models.TextField(blank=True, null=True)),
                        ("body", models.TextField(blank=True, null=True)),
                        ("success", models.BooleanField(null=True)),
                        (
                            "created_at",
                            supworker.models.fields.MessengerTimestamp(
                                db_default=django.db.models.functions.datetime.Now(), editable=False, null=True
                            ),
                        ),
                    ],
                    options={"db_table": "notifications"},
                ),
            ],
        ),
    ]

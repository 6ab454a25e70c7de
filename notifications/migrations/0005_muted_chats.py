# The messenger's muted_chats (docs/notifications.md#muted-chats): created from its contract's
# DDL where the messenger has not created it yet, kept as it is where it has.

from django.db import migrations, models

from notifications import messenger_ddl
from supworker.adoption import CreateSeedTable


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0004_device_registration"),
    ]

    operations = [
        CreateSeedTable(
            "muted_chats",
            messenger_ddl.MUTED_CHATS,
            [
                migrations.CreateModel(
                    name="MutedChat",
                    fields=[
                        (
                            "pk",
                            models.CompositePrimaryKey(
                                "user_id", "chat_id", blank=True, editable=False, primary_key=True, serialize=False
                            ),
                        ),
                        ("user_id", models.UUIDField()),
                        ("chat_id", models.UUIDField()),
                        (
                            "mode",
                            models.TextField(choices=[("silent", "delivered without sound"), ("skip", "not sent")]),
                        ),
                        (
                            "until",
                            models.DateTimeField(
                                blank=True, help_text="the mute ends then; null: until unmuted", null=True
                            ),
                        ),
                    ],
                    options={
                        "db_table": "muted_chats",
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("mode__in", ["silent", "skip"])), name="muted_chats_mode_check"
                            )
                        ],
                    },
                ),
            ],
        ),
    ]

# What supworker adds to the messenger's `notifications` table to use it as its delivery log:
# columns with constant defaults (the API's inserts, which name only the seed's columns, get
# them), indexes built concurrently; see supworker.adoption.

from django.db import migrations, models
from django.db.models import Q

from supworker.adoption import AddColumnWithDefault, AdoptIndex, MatchSeedColumns


class Migration(migrations.Migration):
    atomic = False  # concurrent index builds, and lock_timeout retries between statements

    dependencies = [
        ("notifications", "0001_squashed_0002_notification_claimed_by"),
        ("supworker", "0006_adopt_messenger_tables"),
    ]

    operations = [
        MatchSeedColumns("notifications", nullable=["created_at"], without_default=["id"]),
        AddColumnWithDefault("notification", "job_id", models.CharField(blank=True, max_length=128, null=True), "varchar(128)"),
        AddColumnWithDefault(
            "notification",
            "recipient",
            models.CharField(
                blank=True, db_default="", default="", help_text="masked address, number or device id", max_length=255
            ),
            "varchar(255) NOT NULL",
            default="''",
        ),
        AddColumnWithDefault(
            "notification", "error", models.TextField(blank=True, db_default="", default=""), "text NOT NULL", default="''"
        ),
        AddColumnWithDefault(
            "notification",
            "provider_message_id",
            models.CharField(blank=True, db_default="", default="", max_length=255),
            "varchar(255) NOT NULL",
            default="''",
        ),
        AddColumnWithDefault(
            "notification",
            "claimed_by",
            models.CharField(blank=True, db_default="", default="", max_length=128),
            "varchar(128) NOT NULL",
            default="''",
        ),
        AdoptIndex(
            "notification",
            models.Index(fields=["user_id"], name="notifications_user_idx"),
            legacy_name="notifications_user_id_468e288d",
        ),
        AdoptIndex(
            "notification",
            models.Index(fields=["created_at"], name="notifications_created_idx"),
            legacy_name="notifications_created_at_878ec15c",
        ),
        AdoptIndex(
            "notification",
            models.UniqueConstraint(
                condition=Q(job_id__isnull=False),
                fields=("job_id", "recipient"),
                name="notifications_job_recipient_uniq",
            ),
        ),
    ]

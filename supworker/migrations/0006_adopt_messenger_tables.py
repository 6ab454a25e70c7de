# What supworker adds to the messenger's tables, done as a guest (supworker.adoption): columns
# with constant defaults, indexes built concurrently, each step only where it is missing.
# A database an earlier supworker created gets its names and NOT NULLs matched to the seed's.

from django.db import migrations, models
from django.db.models import Q

from supworker.adoption import AddColumnWithDefault, AdoptIndex, MatchSeedColumns, RenameConstraint

SEED_TABLES_TIMES = {
    "messages": ["created_at", "updated_at"],
    "stories": ["created_at"],
    "user_sessions": ["created_at", "is_active"],
    "user_prekeys": ["created_at"],
    "temporary_files": ["created_at"],
}


class Migration(migrations.Migration):
    atomic = False  # concurrent index builds, and lock_timeout retries between statements

    dependencies = [("supworker", "0001_squashed_0005_job_runs_finished_index")]

    operations = [
        *[MatchSeedColumns(table, nullable=columns, without_default=["id"]) for table, columns in SEED_TABLES_TIMES.items()],
        RenameConstraint("user_prekeys", "user_prekeys_user_prekey_uniq", "user_prekeys_user_id_prekey_id_key"),
        AddColumnWithDefault(
            "message",
            "media_status",
            models.CharField(
                blank=True,
                choices=[("queued", "Queued"), ("processing", "Processing"), ("ready", "Ready"), ("failed", "Failed")],
                max_length=16,
                null=True,
            ),
            "varchar(16)",
        ),
        AddColumnWithDefault(
            "message",
            "media_error",
            models.TextField(blank=True, db_default="", default=""),
            "text NOT NULL",
            default="''",
        ),
        AdoptIndex("message", models.Index(fields=["created_at", "id"], name="messages_created_id_idx")),
        AdoptIndex("message", models.Index(fields=["chat_id", "created_at"], name="messages_chat_created_idx")),
        AdoptIndex("message", models.Index(fields=["sender_id"], name="messages_sender_idx")),
        AdoptIndex(
            "message",
            models.Index(
                condition=Q(media_status__in=["queued", "processing", "failed"]),
                fields=["media_status"],
                name="messages_media_pending_idx",
            ),
        ),
        AdoptIndex(
            "message",
            models.Index(condition=Q(media_url__isnull=False), fields=["media_url"], name="messages_media_url_idx"),
        ),
        AdoptIndex(
            "message",
            models.Index(
                condition=Q(thumbnail_url__isnull=False), fields=["thumbnail_url"], name="messages_thumbnail_url_idx"
            ),
        ),
        AdoptIndex(
            "story", models.Index(fields=["user_id"], name="stories_user_idx"), legacy_name="stories_user_id_9073c7a2"
        ),
        AdoptIndex("story", models.Index(fields=["created_at", "id"], name="stories_created_id_idx")),
        AdoptIndex(
            "story",
            models.Index(condition=Q(deleted_at__isnull=False), fields=["deleted_at", "id"], name="stories_deleted_id_idx"),
        ),
        AdoptIndex(
            "story",
            models.Index(condition=Q(media_url__isnull=False), fields=["media_url"], name="stories_media_url_idx"),
        ),
        AdoptIndex(
            "story",
            models.Index(
                condition=Q(thumbnail_url__isnull=False), fields=["thumbnail_url"], name="stories_thumbnail_url_idx"
            ),
        ),
        AdoptIndex(
            "usersession",
            models.Index(fields=["user_id"], name="user_sessions_user_idx"),
            legacy_name="user_sessions_user_id_43ce9642",
        ),
        AdoptIndex("usersession", models.Index(fields=["last_active_at", "id"], name="user_sessions_active_id_idx")),
        AdoptIndex(
            "usersession",
            models.Index(
                condition=Q(last_active_at__isnull=True), fields=["created_at", "id"], name="user_sessions_never_id_idx"
            ),
        ),
        AdoptIndex(
            "userprekey",
            models.Index(condition=Q(used_at__isnull=False), fields=["used_at", "id"], name="user_prekeys_used_id_idx"),
        ),
        AdoptIndex(
            "userprekey",
            models.Index(condition=Q(used_at__isnull=True), fields=["user_id"], name="user_prekeys_unused_idx"),
        ),
        AdoptIndex("temporaryfile", models.Index(fields=["created_at", "id"], name="temporary_files_created_id_idx")),
    ]

from typing import Any

from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from supworker.enqueue import redis_connection, requeue
from supworker.envelope import Envelope
from supworker.models import (
    DeadLetter,
    GlobalStatistics,
    JobRun,
    Message,
    Story,
    TemporaryFile,
    UserPrekey,
    UserSession,
    UserStatistics,
    WebsocketConnection,
)


class ReadOnlyRecordAdmin(admin.ModelAdmin):
    """Records of what workers did: readable and deletable, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "chat_id", "sender_id", "media_status", "created_at", "deleted_at")
    list_filter = ("media_status", "created_at", ("deleted_at", admin.EmptyFieldListFilter))
    search_fields = ("id", "chat_id", "sender_id", "media_url")
    date_hierarchy = "created_at"
    readonly_fields = ("id", "created_at", "updated_at")


@admin.register(Story)
class StoryAdmin(admin.ModelAdmin):
    list_display = ("id", "user_id", "created_at", "deleted_at")
    list_filter = ("created_at", ("deleted_at", admin.EmptyFieldListFilter))
    search_fields = ("id", "user_id", "media_url")
    date_hierarchy = "created_at"
    readonly_fields = ("id", "created_at")


@admin.register(UserSession)
class UserSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "user_id", "device_id", "is_active", "last_active_at", "created_at")
    list_filter = ("is_active", "last_active_at")
    search_fields = ("id", "user_id", "device_id")
    date_hierarchy = "last_active_at"
    readonly_fields = ("id", "created_at")


@admin.register(UserPrekey)
class UserPrekeyAdmin(admin.ModelAdmin):
    list_display = ("user_id", "prekey_id", "used_at", "created_at")
    list_filter = (("used_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("user_id",)
    readonly_fields = ("id", "created_at")


@admin.register(TemporaryFile)
class TemporaryFileAdmin(admin.ModelAdmin):
    list_display = ("file_path", "created_at")
    list_filter = ("created_at",)
    search_fields = ("file_path",)
    date_hierarchy = "created_at"
    readonly_fields = ("id", "created_at")


@admin.register(WebsocketConnection)
class WebsocketConnectionAdmin(admin.ModelAdmin):
    list_display = ("user_id", "device_id", "session_id", "server_id", "connected_at", "last_heartbeat_at")
    list_filter = ("server_id", "last_heartbeat_at")
    search_fields = ("user_id", "device_id", "session_id", "server_id")
    date_hierarchy = "last_heartbeat_at"


@admin.register(UserStatistics)
class UserStatisticsAdmin(ReadOnlyRecordAdmin):
    list_display = ("user_id", "messages_sent", "stories", "active_sessions", "last_activity_at", "updated_at")
    search_fields = ("user_id",)
    ordering = ("-messages_sent",)


@admin.register(GlobalStatistics)
class GlobalStatisticsAdmin(ReadOnlyRecordAdmin):
    list_display = ("computed_at", "users", "messages", "messages_last_24h", "stories", "active_sessions")
    date_hierarchy = "computed_at"


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyRecordAdmin):
    list_display = ("job_id", "job_type", "queue", "status", "attempts", "enqueued_at", "duration_ms")
    list_filter = ("status", "job_type", "queue", "enqueued_at")
    search_fields = ("job_id", "error")
    date_hierarchy = "enqueued_at"


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyRecordAdmin):
    list_display = ("failed_at", "job_type", "job_id", "source", "attempts", "short_error", "requeued_at")
    list_filter = ("source", "job_type", "failed_at", ("requeued_at", admin.EmptyFieldListFilter))
    search_fields = ("job_id", "error", "routing_key")
    date_hierarchy = "failed_at"
    actions = ("requeue_selected",)

    @admin.action(description="Requeue the selected jobs (fresh retries)")
    def requeue_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        letters = list(queryset.filter(source=DeadLetter.Source.WORKER, envelope__isnull=False))
        skipped = queryset.count() - len(letters)
        envelopes = [Envelope.from_dict(letter.envelope) for letter in letters if letter.envelope]
        if envelopes:
            with transaction.atomic():
                now = timezone.now()
                queryset.filter(pk__in=[letter.pk for letter in letters]).update(requeued_at=now)
                JobRun.objects.filter(job_id__in=[e.job_id for e in envelopes]).update(status="queued", error="")
                requeue(redis_connection(), envelopes)
        message = f"{len(envelopes)} job(s) requeued."
        if skipped:
            message += (
                f" {skipped} message(s) rejected by the consumer were left alone: they are invalid; fix them and"
                " republish from the supworker.dead_letters queue in RabbitMQ."
            )
        self.message_user(request, message)

    @admin.display(description="error")
    def short_error(self, obj: DeadLetter) -> str:
        return obj.error if len(obj.error) <= 120 else obj.error[:119] + "…"

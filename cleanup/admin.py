from django.conf import settings
from django.contrib import admin
from django.template.response import TemplateResponse

from cleanup.models import CronTable, GlobalStatistics, HealthCheckResult, UserStatistics, WebsocketConnection
from supworker.admin import ReadOnlyRecordAdmin
from supworker.models import JobRun
from supworker.schedule import next_runs, scheduler


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


@admin.register(HealthCheckResult)
class HealthCheckResultAdmin(ReadOnlyRecordAdmin):
    list_display = ("checked_at", "healthy", "checks")
    list_filter = ("healthy", "checked_at")
    date_hierarchy = "checked_at"


@admin.register(CronTable)
class CronTableAdmin(admin.ModelAdmin):
    """The cron table with each entry's next run and its last recorded run."""

    def has_add_permission(self, request) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        rows = []
        for entry, when in next_runs(scheduler()):
            last = JobRun.objects.filter(job_id__startswith=f"cron:{entry.name}:").order_by("-enqueued_at").first()
            rows.append({"entry": entry, "next_run": when, "last_run": last})
        disabled = [name for name, cron in settings.CONFIG.cron.items() if cron == "off"]
        context = self.admin_site.each_context(request) | {"rows": rows, "disabled": disabled, "title": "Cron table"}
        return TemplateResponse(request, "admin/cleanup/cron_table.html", context)

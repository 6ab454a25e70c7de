from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

from cleanup.models import CronTable
from supworker.models import JobRun
from supworker.schedule import next_runs, scheduler


@admin.register(CronTable)
class CronTableAdmin(admin.ModelAdmin):
    """The cron table with each entry's next run and its last recorded run."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        rows = []
        for entry, when in next_runs(scheduler()):
            last = JobRun.objects.filter(job_id__startswith=f"cron:{entry.name}:").order_by("-enqueued_at").first()
            rows.append({"entry": entry, "next_run": when, "last_run": last})
        disabled = [name for name, cron in settings.CONFIG.cron.items() if cron == "off"]
        context = self.admin_site.each_context(request) | {"rows": rows, "disabled": disabled, "title": "Cron table"}
        return TemplateResponse(request, "admin/cleanup/cron_table.html", context)

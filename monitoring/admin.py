from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

from monitoring import job_search
from monitoring.dashboard import context
from monitoring.models import Dashboard, HealthCheckResult
from supworker.admin import ReadOnlyRecordAdmin


@admin.register(Dashboard)
class DashboardAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        data = self.admin_site.each_context(request) | context() | {"title": "Dashboard"}
        if "job" in request.GET:
            data["search"] = job_search.find(request.GET["job"])
        return TemplateResponse(request, "admin/monitoring/dashboard.html", data)


@admin.register(HealthCheckResult)
class HealthCheckResultAdmin(ReadOnlyRecordAdmin):
    list_display = ("checked_at", "healthy", "checks")
    list_filter = ("healthy", "checked_at")
    date_hierarchy = "checked_at"

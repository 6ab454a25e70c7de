from django.contrib import admin
from django.template.response import TemplateResponse

from monitoring import job_search
from monitoring.dashboard import context
from monitoring.models import Dashboard


@admin.register(Dashboard)
class DashboardAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        data = self.admin_site.each_context(request) | context() | {"title": "Dashboard"}
        if "job" in request.GET:
            data["search"] = job_search.find(request.GET["job"])
        return TemplateResponse(request, "admin/monitoring/dashboard.html", data)

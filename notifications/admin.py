from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from notifications.models import SKIPPED_PREFIX, Device, Notification

# fcm-django's own admin (fcm_django comes first in INSTALLED_APPS) expects a `user` foreign key;
# our devices carry the messenger's user id.
if admin.site.is_registered(Device):
    admin.site.unregister(Device)


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("id", "user_id", "type", "device_id", "active", "changed_at", "date_created")
    list_filter = ("active", "type", "date_created")
    search_fields = ("user_id", "device_id", "name", "registration_id")
    date_hierarchy = "date_created"
    actions = ("deactivate",)

    @admin.action(description="Deactivate (stop sending pushes to) the selected devices")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        updated = queryset.update(active=False)
        self.message_user(request, f"{updated} device(s) deactivated.")


class DeliveryStatus(admin.SimpleListFilter):
    """Notification.status: what `success` and `error` say together."""

    title = parameter_name = "status"
    FILTERS = {
        "sent": Q(success=True),
        "failed": Q(success=False) & ~Q(error__startswith=SKIPPED_PREFIX),
        "skipped": Q(success=False, error__startswith=SKIPPED_PREFIX),
        "in flight": Q(success__isnull=True, job_id__isnull=False),
    }

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(status, status) for status in self.FILTERS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Notification]) -> QuerySet[Notification]:
        status = self.value()
        return queryset.filter(self.FILTERS[status]) if status in self.FILTERS else queryset


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("created_at", "type", "user_id", "recipient", "title", "status", "error", "job_id")
    list_filter = ("type", DeliveryStatus, "created_at")
    search_fields = ("user_id", "job_id", "recipient", "title", "provider_message_id")
    date_hierarchy = "created_at"
    readonly_fields = ["status", *(f.name for f in Notification._meta.fields)]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the log records what workers did; it is not written by hand

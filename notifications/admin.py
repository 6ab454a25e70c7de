from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from notifications.models import Device, Notification

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


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("created_at", "type", "user_id", "recipient", "title", "success", "job_id")
    list_filter = ("type", "success", "created_at")
    search_fields = ("user_id", "job_id", "recipient", "title", "provider_message_id")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Notification._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the log records what workers did; it is not written by hand

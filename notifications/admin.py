from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from notifications import suppression
from notifications.models import SKIPPED_PREFIX, SUPPRESSED_PREFIX, Device, EmailSuppression, Notification

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
    NOT_SENT_ON_PURPOSE = Q(error__startswith=SKIPPED_PREFIX) | Q(error__startswith=SUPPRESSED_PREFIX)
    FILTERS = {
        "sent": Q(success=True),
        "failed": Q(success=False) & ~NOT_SENT_ON_PURPOSE,
        "skipped": Q(success=False, error__startswith=SKIPPED_PREFIX),
        "suppressed": Q(success=False, error__startswith=SUPPRESSED_PREFIX),
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


@admin.register(EmailSuppression)
class EmailSuppressionAdmin(admin.ModelAdmin):
    """Addresses not mailed since their ESP reported a hard bounce or a complaint; lifting one
    sends to it again (its row stays, with who lifted it). notifications/suppression.py."""

    list_display = ("address", "reason", "esp", "count", "first_seen", "last_seen", "active", "lifted_by", "lifted_at")
    list_filter = ("reason", ("lifted_at", admin.EmptyFieldListFilter), "esp", "last_seen")
    search_fields = ("address",)
    date_hierarchy = "last_seen"
    ordering = ("-last_seen",)
    readonly_fields = [f.name for f in EmailSuppression._meta.fields]
    actions = ("lift_suppression",)

    @admin.display(boolean=True, description="in force")
    def active(self, entry: EmailSuppression) -> bool:
        return entry.active

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[EmailSuppression], search_term: str
    ) -> tuple[QuerySet[EmailSuppression], bool]:
        # Addresses are kept lower-case: "Bob@Example.com" finds bob@example.com.
        return super().get_search_results(request, queryset, suppression.normalise(search_term))

    @admin.action(
        description="Lift suppression: send e-mails and OTPs to the selected addresses again",
        permissions=["lift"],
    )
    def lift_suppression(self, request: HttpRequest, queryset: QuerySet[EmailSuppression]) -> None:
        lifted = suppression.lift(queryset, by=request.user.get_username())
        self.message_user(request, f"{lifted} address(es) will be mailed again.")

    def has_lift_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("notifications.change_emailsuppression")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # entries come from the ESP's reports

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # not edited: lifted with the action, which records who did it

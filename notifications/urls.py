from django.urls import path

from notifications import views, webhooks

urlpatterns = [
    path("health/lms", views.lms_health_view, name="health-lms"),
    # The paths and names anymail.urls gives these views (mounted at anymail/, as its docs say).
    *(
        path(f"anymail/{hook.esp}/tracking/", webhooks.gated(hook), name=f"{hook.esp}_tracking_webhook")
        for hook in webhooks.WEBHOOKS
    ),
]

from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "supworker"
admin.site.site_title = "supworker"
admin.site.index_title = "Jobs, failures, notifications and media"

# django-rq's queue pages live inside the admin, at /admin/django_rq/dashboard/.
urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("monitoring.urls")),
    path("", include("notifications.urls")),
]

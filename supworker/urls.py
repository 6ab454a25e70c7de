from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "supworker"
admin.site.site_title = "supworker"
admin.site.index_title = "Jobs, failures, notifications and media"

urlpatterns = [
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
]

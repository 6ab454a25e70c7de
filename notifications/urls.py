from django.urls import path

from notifications import views

urlpatterns = [
    path("health/lms", views.lms_health_view, name="health-lms"),
]

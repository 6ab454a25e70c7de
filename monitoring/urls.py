from django.urls import path

from monitoring import views

urlpatterns = [
    path("health", views.health_view, name="health"),
    path("health/live", views.live, name="health-live"),
    path("health/ready", views.ready, name="health-ready"),
    path("metrics", views.prometheus, name="metrics"),
    path("metrics/queues", views.queue_metrics, name="metrics-queues"),
    path("metrics/system", views.system_metrics, name="metrics-system"),
    path("metrics/jobs", views.job_metrics, name="metrics-jobs"),
    path("shutdown", views.shutdown_view, name="shutdown"),
    path("openapi.yaml", views.openapi_yaml, name="openapi-yaml"),
    path("openapi.json", views.openapi_json, name="openapi-json"),
]

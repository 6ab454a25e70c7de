"""The notifications app's HTTP endpoint; its contract is in monitoring/openapi.yaml with the others."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from notifications import lms_health
from supworker.endpoints import read_only


@read_only
def lms_health_view(request: HttpRequest) -> JsonResponse:
    """The LMS OTP worker's health object (notifications/lms_health.py). Always 200: it is about the
    workers, not this web process, so a probe pointed at it must not restart the web process."""
    return JsonResponse(lms_health.report())

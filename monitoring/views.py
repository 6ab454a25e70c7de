"""The machine-facing HTTP endpoints. Their contract is monitoring/openapi.yaml."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.crypto import constant_time_compare
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitoring import health, job_stats, queues, system
from supworker import metrics, shutdown
from supworker.endpoints import read_only


def _health_response(names: tuple[str, ...] | None = None) -> JsonResponse:
    body = health.report(names)
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)


@read_only
def health_view(request: HttpRequest) -> JsonResponse:
    return _health_response()


@read_only
def live(request: HttpRequest) -> JsonResponse:
    """The process answers: nothing else is checked (a restart would not fix a database outage)."""
    return JsonResponse({"status": "ok", "uptime_seconds": health.uptime_seconds()})


@read_only
def ready(request: HttpRequest) -> JsonResponse:
    """Ready for traffic when what every request needs answers: PostgreSQL and Redis."""
    return _health_response(health.CRITICAL)


@read_only
def queue_metrics(request: HttpRequest) -> JsonResponse:
    return JsonResponse(queues.report())


@read_only
def system_metrics(request: HttpRequest) -> JsonResponse:
    return JsonResponse(system.report())


@read_only
def job_metrics(request: HttpRequest) -> JsonResponse:
    return JsonResponse(job_stats.report())


@read_only
def prometheus(request: HttpRequest) -> HttpResponse:
    """Every app's collectors (supworker.metrics), read now."""
    return HttpResponse(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST)


OPENAPI = Path(__file__).with_name("openapi.yaml")


@functools.cache
def _openapi_text() -> str:
    return OPENAPI.read_text()


@functools.cache
def _openapi_document() -> dict[str, Any]:
    return yaml.safe_load(_openapi_text())


@read_only
def openapi_yaml(request: HttpRequest) -> HttpResponse:
    """The contract, monitoring/openapi.yaml, as written (application/yaml, RFC 9512)."""
    return HttpResponse(_openapi_text(), content_type="application/yaml; charset=utf-8")


@read_only
def openapi_json(request: HttpRequest) -> JsonResponse:
    """The same contract as JSON, for tools that read only JSON."""
    return JsonResponse(_openapi_document())


def _refuse(status: int, reason: str) -> JsonResponse:
    response = JsonResponse({"error": reason}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="supworker"'
    return response


@csrf_exempt  # a bearer token is not a cookie; a staff session is checked for CSRF below
@require_POST
def shutdown_view(request: HttpRequest) -> JsonResponse:
    header = request.headers.get("Authorization", "")
    token = settings.CONFIG.shutdown_token
    if header.startswith("Bearer "):
        if not token or not constant_time_compare(header.removeprefix("Bearer "), token):
            return _refuse(403, "the token is not the shutdown token")
    elif request.user.is_authenticated:
        if not request.user.is_staff:
            return _refuse(403, "only staff may shut the service down")
        # The middleware is used for its check alone: it never calls a view or the next handler.
        if CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {}) is not None:  # type: ignore[arg-type]
            return _refuse(403, "CSRF check failed")
    else:
        return _refuse(401, "send Authorization: Bearer <SHUTDOWN_TOKEN>, or sign in as staff")
    return JsonResponse({"status": "shutting down"} | shutdown.request_shutdown(), status=202)

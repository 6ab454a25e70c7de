"""What the machine-facing HTTP endpoints of every app share."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET


def read_only(view: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """GET only, never cached. CSRF-exempt: no cookie authorises anything here, and otherwise
    CsrfViewMiddleware would answer any other method with 403 before require_GET's 405."""
    return csrf_exempt(never_cache(require_GET(view)))

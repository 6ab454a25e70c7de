"""firebase-admin, set up from supworker's settings: credentials, endpoint and HTTP transport.

Two credential modes: the service account (FIREBASE_PROJECT_ID, FIREBASE_CLIENT_EMAIL,
FIREBASE_PRIVATE_KEY) in production, whose signed JWT google-auth exchanges for an access
token at FIREBASE_TOKEN_URI (Google's by default); or a static bearer token (FCM_ACCESS_TOKEN
with FCM_PROJECT_ID) that needs no Google account, for a local FCM server in tests and benchmarks.

firebase-admin has no emulator for FCM and no public way to change where it sends: the URL is
the private `_MessagingService.FCM_URL`, formatted into each service's `_fcm_url`. We set that
attribute on our app's service when FCM_ENDPOINT is not Google's. This relies on
firebase-admin 7.7.0's internals, which is why pyproject.toml pins it and
tests/test_notifications_push.py checks the override.

The SDK's session is replaced by one that skips requests' per-call preparation
(notifications/fcm_session.py; the private `_client._session`, under the same pin), and carries
each push over libcurl (notifications/curl_adapter.py) unless FCM_HTTP_CLIENT=requests; neither
retries a status, the runner does.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading

import firebase_admin
import google.auth.transport.requests
import google.oauth2.credentials
import requests
from django.conf import settings
from firebase_admin import credentials, messaging
from urllib3.util.retry import Retry

from notifications.curl_adapter import CurlAdapter
from notifications.fcm_session import LeanAuthorizedSession

# The SDK's own adapter retries 500/503 up to 4 times, sleeping for the whole Retry-After
# inside the worker. Retries belong to the runner (backoff, jitter, Retry-After, dead letters):
# keep only one retry of a connection that failed before the request went out.
_NO_STATUS_RETRIES = Retry(total=1, connect=1, read=0, status=0, redirect=0, raise_on_status=False)
_lock = threading.Lock()
# Push requests in flight at once per batch (notifications/push.py): each needs a pooled connection.
SEND_THREADS = 100


class StaticTokenCredential(credentials.Base):
    """A credential whose access token is given, never refreshed: for a local FCM server."""

    def __init__(self, token: str):
        self._credential = google.oauth2.credentials.Credentials(token=token)

    def get_credential(self) -> google.oauth2.credentials.Credentials:
        return self._credential


class NotConfigured(Exception):
    """Neither a service account nor a static token is set."""


def project_id() -> str:
    config = settings.CONFIG.notifications
    return config.fcm_project_id or config.firebase_project_id


def configured() -> bool:
    config = settings.CONFIG.notifications
    return bool(project_id() and (config.fcm_access_token or config.firebase_private_key))


def send_url(endpoint: str, project: str) -> str:
    return f"{endpoint.rstrip('/')}/v1/projects/{project}/messages:send"


def app() -> firebase_admin.App:
    """The firebase-admin app for the current settings (one per distinct configuration)."""
    config = settings.CONFIG.notifications
    if not configured():
        raise NotConfigured(
            "FCM is not configured: set FIREBASE_PROJECT_ID, FIREBASE_CLIENT_EMAIL and FIREBASE_PRIVATE_KEY, "
            "or FCM_ACCESS_TOKEN with FCM_PROJECT_ID"
        )
    project = project_id()
    identity = "|".join(
        [
            project,
            config.fcm_endpoint,
            config.fcm_access_token,
            config.firebase_client_email,
            config.firebase_token_uri,
            str(config.fcm_timeout_s),
            config.fcm_http_client,
            _ca_bundle(),
        ]
    )
    name = "supworker-" + hashlib.sha256(identity.encode()).hexdigest()[:16]
    with _lock:
        try:
            return firebase_admin.get_app(name)
        except ValueError:
            pass
        if config.fcm_access_token:
            credential: credentials.Base = StaticTokenCredential(config.fcm_access_token)
        else:
            credential = credentials.Certificate(
                {
                    "type": "service_account",
                    "project_id": project,
                    "client_email": config.firebase_client_email,
                    "private_key": config.firebase_private_key,
                    "token_uri": config.firebase_token_uri,
                }
            )
        fcm_app = firebase_admin.initialize_app(
            credential, {"projectId": project, "httpTimeout": config.fcm_timeout_s}, name=name
        )
        _configure_service(fcm_app, config.fcm_endpoint, project, config.fcm_http_client)
        return fcm_app


def prepare() -> None:
    """Make the app and a fresh access token in the RQ worker, before it forks (see notifications/jobs.py).

    A work-horse making the app itself spends about 0.14 s of CPU (the SDK builds two TLS
    contexts for an async client we never use), a quarter of a 500-push batch; and with a service
    account, each horse would fetch its own OAuth token from Google, one more round trip per batch.
    Run again at every registry cleanup: a token within minutes of expiry is refreshed here.
    """
    credential = app().credential.get_credential()
    if not credential.valid:  # a static token always is
        # google-auth would wait 120 s for Google's token endpoint; the worker loop must not.
        request = functools.partial(
            google.auth.transport.requests.Request(), timeout=settings.CONFIG.notifications.fcm_timeout_s
        )
        credential.refresh(request)


def _configure_service(fcm_app: firebase_admin.App, endpoint: str, project: str, http_client: str) -> None:
    service = messaging._get_messaging_service(fcm_app)  # private: see the module docstring
    service._fcm_url = send_url(endpoint, project)
    # The SDK's AuthorizedSession with the same credential and headers, minus requests' per-call
    # preparation (notifications/fcm_session.py). The SDK's own adapters (retrying 500/503
    # inside the worker) are left behind; ours is mounted below.
    sdk_session = service._client.session
    session = LeanAuthorizedSession(sdk_session.credentials)
    session.headers.update(sdk_session.headers)
    service._client._session = session
    adapter: requests.adapters.BaseAdapter
    if http_client == "curl":
        adapter = CurlAdapter()  # see notifications/curl_adapter.py; libcurl retries nothing by itself
    else:
        # One pool with a connection for every sending thread, without status retries.
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=SEND_THREADS, max_retries=_NO_STATUS_RETRIES
        )
    session.mount(endpoint.rstrip("/") + "/", adapter)
    # requests re-reads the proxy and CA variables from os.environ on every request: about
    # 40 % of the client's CPU per push. Read them once, here, and stop looking.
    session.proxies.update(requests.utils.get_environ_proxies(endpoint))
    ca_bundle = _ca_bundle()
    if ca_bundle:
        session.verify = ca_bundle
    session.trust_env = False


def _ca_bundle() -> str:
    """The CA bundle requests would read from the environment ("" for its own, certifi's)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or ""

"""What carries firebase-admin's requests (FCM_HTTP_CLIENT): libcurl by default, requests' own
adapter as the fallback. Both against the loopback FCM server, over HTTP and over HTTPS with a
private CA, and when the server is slow or not there at all: the SDK must see the same answers
and the same errors either way."""

from __future__ import annotations

import socket
import time

import pytest
import requests
from firebase_admin import messaging

from notifications import fcm, push
from notifications.curl_adapter import CurlAdapter
from notifications.fcm_session import LeanAuthorizedSession, LeanSession
from tests.notification_helpers import close_fcm_connections, envelope, forget_fcm_apps
from tests.notification_servers import FcmServer
from tests.tls_certs import loopback_certificate

pytestmark = pytest.mark.django_db(transaction=True)
CLIENTS = ["curl", "requests"]


@pytest.fixture
def use_server(settings):
    """Point supworker's FCM settings at a server, with the given HTTP client."""
    yield _use_server(settings)
    forget_fcm_apps()


def _use_server(settings):
    def use(server: FcmServer | None, client: str, url: str = "", timeout_s: int = 10) -> None:
        settings.CONFIG = settings.CONFIG.with_section(
            "notifications",
            fcm_endpoint=url or server.url,
            fcm_access_token=server.token if server else "loopback-static-token",
            fcm_project_id="sup-transport",
            fcm_http_client=client,
            fcm_timeout_s=timeout_s,
        )

    return use


def send_through(server: FcmServer, client: str, use_server, *jobs, timeout_s: int = 10) -> list:
    """Start `server`, send `jobs` as one batch with `client`, stop the server; the outcomes."""
    server.start()
    try:
        use_server(server, client, timeout_s=timeout_s)
        return push.send_batch(list(jobs))
    finally:
        close_fcm_connections()
        server.stop()


def push_to(token: str, **data: str):
    data = {"chatId": "7", **data}
    return envelope("notification.push", fcmToken=token, title="Alice", body="Hi there", data=data)


@pytest.mark.parametrize("client", CLIENTS)
def test_each_client_delivers_the_sdk_request_unchanged_and_reads_the_answer(client, use_server):
    server = FcmServer()
    (outcome,) = send_through(server, client, use_server, push_to("tok-a", preview="x" * 2000))  # near the 4 KiB limit
    session = messaging._get_messaging_service(fcm.app())._client.session
    mounted = session.get_adapter(fcm.send_url(server.url, "sup-transport"))

    assert isinstance(mounted, CurlAdapter) == (client == "curl")
    assert outcome.ok, outcome.error
    (request,) = server.requests
    assert request["project"] == "sup-transport"
    assert request["headers"]["authorization"] == f"Bearer {server.token}"
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["x-goog-api-format-version"] == "2"
    assert request["message"]["token"] == "tok-a"
    assert request["message"]["data"] == {"chatId": "7", "preview": "x" * 2000}


@pytest.mark.parametrize("client", CLIENTS)
def test_compressed_answers_are_decoded(client, use_server):
    server = FcmServer(gzip_answers=True)  # as a proxy on the way may do
    server.script["gone"] = ["UNREGISTERED"]
    sent, gone = send_through(server, client, use_server, push_to("tok-gz"), push_to("gone"))
    assert "gzip" in server.requests[0]["headers"]["accept-encoding"]
    assert sent.ok and sent.result["sent"] == 1, sent.error
    assert gone.permanent and "UNREGISTERED" in gone.error, "the error body was read: its errorCode counts"


@pytest.mark.parametrize("client", CLIENTS)
def test_an_fcm_error_reaches_the_sdk_with_its_status_code_and_retry_after(client, use_server):
    server = FcmServer()
    server.script["busy"] = [("UNAVAILABLE", 7)]
    server.script["gone"] = ["UNREGISTERED"]
    busy, gone = send_through(server, client, use_server, push_to("busy"), push_to("gone"))
    assert not busy.ok and not busy.permanent and busy.retry_after == 7 and "UNAVAILABLE" in busy.error
    assert not gone.ok and gone.permanent and "UNREGISTERED" in gone.error


@pytest.mark.parametrize("client", CLIENTS)
def test_a_server_that_does_not_answer_in_time_is_a_retried_deadline(client, use_server):
    server = FcmServer()
    server.hold_after(0)  # takes the request, never answers
    started = time.monotonic()
    (outcome,) = send_through(server, client, use_server, push_to("slow"), timeout_s=2)
    waited = time.monotonic() - started  # the server's start and stop take a few milliseconds
    assert server.attempts["slow"] == 1
    assert not outcome.ok and not outcome.permanent
    assert "DEADLINE_EXCEEDED" in outcome.error, outcome.error
    assert waited < 4, f"a silent server is waited for FCM_TIMEOUT_SECONDS (2), not twice that: {waited:.1f} s"


@pytest.mark.parametrize("client", CLIENTS)
def test_an_endpoint_nobody_listens_on_is_retried_as_unavailable(client, use_server):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens once the probe is closed
    use_server(None, client, url=f"http://127.0.0.1:{closed_port}")
    (outcome,) = push.send_batch([push_to("nobody")])
    assert not outcome.ok and not outcome.permanent
    assert "UNAVAILABLE" in outcome.error, outcome.error


@pytest.mark.parametrize("client", CLIENTS)
def test_https_is_verified_against_the_configured_ca_bundle(client, use_server, tmp_path, monkeypatch):
    certificate = loopback_certificate(tmp_path)
    trusted, untrusted = FcmServer(tls=certificate), FcmServer(tls=certificate)
    trusted.start()
    untrusted.start()
    try:
        # The CA bundle is read when the app is made (notifications/fcm.py), as in production.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate.ca))
        use_server(trusted, client)
        (accepted,) = push.send_batch([push_to("over-tls")])
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        use_server(untrusted, client)  # another endpoint: another app, with the public CAs only
        (refused,) = push.send_batch([push_to("forged")])
    finally:
        close_fcm_connections()
        trusted.stop()
        untrusted.stop()

    assert trusted.url.startswith("https://") and accepted.ok, accepted.error
    assert trusted.attempts["over-tls"] == 1
    assert not refused.ok and not refused.permanent, "a certificate problem may be fixed: retried"
    assert untrusted.attempts["forged"] == 0, "nothing is sent to a server whose certificate is not trusted"


def test_the_curl_adapter_reads_the_final_response_of_http_2_and_after_100_continue():
    request = requests.Request("POST", "https://fcm.example/v1/x", data=b"{}").prepare()
    lines = [b"HTTP/1.1 100 Continue\r\n", b"\r\n", b"HTTP/2 200 \r\n", b"content-type: application/json\r\n",
             b"vary: origin\r\n", b"vary: referer\r\n", b"\r\n"]  # fmt: skip
    response = CurlAdapter()._response(request, 200, lines, b'{"name": "projects/p/messages/1"}')
    assert response.status_code == 200 and response.json() == {"name": "projects/p/messages/1"}
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["vary"] == "origin, referer", "repeated headers joined, as urllib3 does"
    assert response.encoding is None or response.encoding.lower() == "utf-8"


def test_over_tls_libcurl_speaks_http_2_where_the_server_offers_it_as_google_does(use_server, tmp_path, monkeypatch):
    """requests' adapter speaks HTTP/1.1 only (over TLS: the test above); libcurl takes HTTP/2."""
    certificate = loopback_certificate(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate.ca))
    server = FcmServer(tls=certificate, http2=True)  # ALPN offers h2 and http/1.1
    server.script["gone"] = ["UNREGISTERED"]
    server.script["busy"] = [("UNAVAILABLE", 5)]
    sent, gone, busy = send_through(
        server, "curl", use_server, push_to("tok-h2", preview="y" * 1500), push_to("gone"), push_to("busy")
    )
    assert {request["http"] for request in server.requests} == {"2"}
    assert sent.ok, sent.error
    assert server.messages_to("tok-h2")[0]["data"]["preview"] == "y" * 1500
    assert gone.permanent and "UNREGISTERED" in gone.error
    assert not busy.permanent and busy.retry_after == 5


class _Recorder(requests.adapters.BaseAdapter):
    """An adapter that keeps what it is given and answers 200 `{}`."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.sent.append(request)
        response = requests.Response()
        response.status_code, response._content, response.request = 200, b"{}", request
        return response

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "arguments",
    [
        {"json": {"message": {"token": "t", "data": {"é": "ü"}}}, "headers": {"X-Extra": "1", "Accept": None}},
        {"data": b"raw", "headers": {"Content-Type": "text/plain"}},
        {"data": "text é"},
        {},
    ],
)
def test_the_lean_session_hands_the_adapter_what_requests_would(arguments):
    sent = {}
    for name, session in (("requests", requests.Session()), ("lean", LeanSession())):
        session.trust_env = False
        session.headers["X-Session"] = "s"
        recorder = _Recorder()
        session.mount("http://fcm.test/", recorder)
        session.request("POST", "http://fcm.test/v1/projects/p/messages:send", timeout=5, **arguments)
        (request,) = recorder.sent
        body = request.body.encode() if isinstance(request.body, str) else request.body
        sent[name] = (request.method, request.url, body, {k.lower(): v for k, v in request.headers.items()})
    assert sent["lean"] == sent["requests"]


def test_the_lean_session_leaves_what_it_does_not_handle_to_requests():
    session = LeanSession()
    recorder = _Recorder()
    session.mount("http://fcm.test/", recorder)
    session.request("GET", "http://fcm.test/x", params={"a": "b c"}, timeout=5)
    assert recorder.sent[0].url == "http://fcm.test/x?a=b+c"


def test_firebase_admin_sends_through_the_lean_session(use_server):
    use_server(None, "curl", url="http://127.0.0.1:9")
    session = messaging._get_messaging_service(fcm.app())._client.session
    assert isinstance(session, LeanAuthorizedSession)

"""Protocol servers on loopback for the notification tests and benchmark.

- `FcmServer`: the FCM HTTP v1 send API (`POST /v1/projects/<project>/messages:send`) on
  uvicorn (HTTP, HTTPS) or Hypercorn (HTTP/2 over TLS), JSON in and out, errors in Google's
  format with `error.details[].errorCode`. What a token gets back is scripted per token
  (`script`), success by default.
- `SmtpServer`: aiosmtpd, keeping every message it receives.
- `SmsServer`: a Vonage-style `POST /sms/json`.
- `SendGridServer`: SendGrid's v3 mail/send API, for django-anymail's SendGrid backend.

For crash tests, the FCM and SMTP servers can hold their answers (`hold_after(n)`): they
answer n more sends, then take every further one (it counts as received: the provider got it)
without answering until `release()`, after which those answers are dropped, as they would be
for a client that died meanwhile, and the server answers normally again.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import hypercorn.asyncio
import hypercorn.config
import uvicorn
from aiosmtpd.controller import Controller

from tests.tls_certs import ServerCertificate

FCM_STATUS = {
    "UNREGISTERED": (404, "NOT_FOUND"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "INTERNAL": (500, "INTERNAL"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
}
# Google's own text where it matters: an INVALID_ARGUMENT is about the token only when it says so.
FCM_MESSAGES = {
    "UNREGISTERED": "Requested entity was not found.",
    "INVALID_ARGUMENT": "The registration token is not a valid FCM registration token",
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


class _JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Google's front end
    # Headers and body go out in two writes: with Nagle's algorithm on, the body waits for the
    # client's delayed ACK, 40 ms per request that Google's front end does not add.
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class _Holding:
    """Answers n sends, then keeps the rest unanswered until released (see the module docstring)."""

    lock: threading.Lock

    def _init_holding(self) -> None:
        self.answers_left: int | None = None  # None: answer everything
        self.held: list[str] = []  # who sent what is held: tokens or addresses
        self.released = threading.Event()

    def hold_after(self, answers: int) -> None:
        with self.lock:
            self.answers_left, self.held = answers, []
            self.released.clear()

    def release(self) -> list[str]:
        """Stop holding; returns what was held (received, never answered)."""
        with self.lock:
            self.answers_left = None
            held = list(self.held)
        self.released.set()
        return held

    def _hold(self, what: str) -> bool:
        """Called with the lock held, for a send just received: True if its answer is to be held."""
        if self.answers_left is None:
            return False
        if self.answers_left > 0:
            self.answers_left -= 1
            return False
        self.held.append(what)
        return True


class _Loopback:
    handler: type[_JsonHandler]

    def start(self) -> None:
        outer = self

        class Handler(self.handler):  # type: ignore[name-defined, misc]
            server_state = outer

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FcmServer(_Holding):
    """The FCM v1 send API as an ASGI app on uvicorn (httptools, uvloop) in a thread of its own.

    Lean on purpose: the benchmark runs it on the same two cores as supworker, and Google's
    servers cost our machine nothing; the stdlib's threading server spent 0.45 ms of CPU on
    each request, this one about a third of that.
    """

    def __init__(
        self,
        token: str = "loopback-static-token",  # noqa: S107 - a test token
        keep_requests: bool = True,
        tls: ServerCertificate | None = None,
        gzip_answers: bool = False,
        http2: bool = False,
        authorize: Callable[[str], bool] | None = None,
    ):
        self.token = token
        # Checks each send's Authorization header instead of `token` (e.g. tests.oauth_token_server).
        self.authorize = authorize
        self.tls = tls  # serve HTTPS with this certificate
        self.http2 = http2  # offer HTTP/2 (needs tls): served by hypercorn instead of uvicorn
        self.gzip_answers = gzip_answers  # compress answers for clients that accept gzip, as proxies may
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.attempts: dict[str, int] = defaultdict(int)
        # token -> answers to give, in order: "UNREGISTERED", ("UNAVAILABLE", retry_after_seconds),
        # or (code, retry_after, message), e.g. ("INVALID_ARGUMENT", None, "Invalid value at 'message.data'")
        self.script: dict[str, list[Any]] = {}
        self.keep_requests = keep_requests  # False: count attempts only (benchmarks)
        self._init_holding()
        self._authorization = f"Bearer {token}".encode()

    def start(self) -> None:
        if self.http2:
            self._start_hypercorn()
        else:
            self._start_uvicorn()

    def _start_uvicorn(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self._app, interface="asgi3", http="httptools", loop="uvloop", lifespan="off",
            access_log=False, log_level="warning", backlog=1024, timeout_keep_alive=60,
            ssl_certfile=str(self.tls.cert) if self.tls else None, ssl_keyfile=str(self.tls.key) if self.tls else None,
        )  # fmt: skip
        self._uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [listener]}, daemon=True)
        self.thread.start()
        while not self._uvicorn.started:
            if not self.thread.is_alive():
                raise RuntimeError("the loopback FCM server did not start")
            time.sleep(0.01)

    def _start_hypercorn(self) -> None:
        """HTTP/2 (and HTTP/1.1) over TLS, chosen by ALPN as Google's front end does; uvicorn has no HTTP/2."""
        assert self.tls, "HTTP/2 is offered over TLS only"
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        config = hypercorn.config.Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.certfile, config.keyfile = str(self.tls.cert), str(self.tls.key)
        config.alpn_protocols = ["h2", "http/1.1"]
        config.accesslog = config.errorlog = None
        config.graceful_timeout = 1  # seconds its shutdown waits for kept-alive connections

        async def until_stopped() -> None:
            while not self._stopping.is_set():
                await asyncio.sleep(0.05)

        def run() -> None:
            asyncio.run(hypercorn.asyncio.serve(self._app, config, shutdown_trigger=until_stopped))

        self._stopping = threading.Event()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        # Up once a TLS handshake completes (a bare connect would make it log a failed handshake).
        wait_until_listening(self.port, self.thread.is_alive, "the loopback FCM server", tls_ca=self.tls.ca)

    def stop(self) -> None:
        self.release()
        if self.http2:
            self._stopping.set()
        else:
            self._uvicorn.should_exit = True
        self.thread.join(10)

    def messages_to(self, token: str) -> list[dict]:
        with self.lock:
            return [r["message"] for r in self.requests if r["message"].get("token") == token]

    def count(self) -> int:
        with self.lock:
            return sum(self.attempts.values())

    async def _app(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # hypercorn's start and stop: nothing to set up
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        status, answer, extra = await self._answer(scope, body)
        raw = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json; charset=UTF-8")]
        if self.gzip_answers and b"gzip" in dict(scope["headers"]).get(b"accept-encoding", b""):
            raw = gzip.compress(raw)
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(raw)).encode()))
        headers += [(name.lower().encode(), value.encode()) for name, value in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})

    async def _answer(self, scope: dict, body: bytes) -> tuple[int, dict, dict[str, str]]:
        parts = scope["path"].split("/")
        if (scope["method"] != "POST" or len(parts) != 5 or parts[1] != "v1" or parts[2] != "projects"
                or parts[4] != "messages:send"):  # fmt: skip
            return 404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}, {}
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"")
        if self.authorize:
            allowed = self.authorize(authorization.decode("latin-1"))
        else:
            allowed = authorization == self._authorization
        if not allowed:
            return 401, {"error": {"code": 401, "message": "bad credentials", "status": "UNAUTHENTICATED"}}, {}
        message = json.loads(body)["message"]
        token = message.get("token", "")
        with self.lock:
            if self.keep_requests:
                received = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                self.requests.append(
                    {"project": parts[3], "headers": received, "message": message, "http": scope["http_version"]}
                )
            self.attempts[token] += 1
            scripted = self.script.get(token) or []
            answer = scripted.pop(0) if scripted else None
            hold = self._hold(token)
        if hold:
            while not self.released.is_set():
                await asyncio.sleep(0.02)
            # Its client is gone (the crash tests kill it meanwhile): what it gets no longer matters.
            return 500, {"error": {"code": 500, "message": "answer dropped", "status": "INTERNAL"}}, {}
        if answer is None:
            return 200, {"name": f"projects/{parts[3]}/messages/{uuid.uuid4().hex}"}, {}
        code, retry_after, message = (*answer, None)[:3] if isinstance(answer, tuple) else (answer, None, None)
        status, google_status = FCM_STATUS[code]
        error = {
            "code": status,
            "message": message or FCM_MESSAGES.get(code, f"scripted {code}"),
            "status": google_status,
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}],
        }
        return status, {"error": error}, {"Retry-After": str(retry_after)} if retry_after is not None else {}


class _SmsHandler(_JsonHandler):
    server_state: SmsServer

    def do_POST(self) -> None:
        state = self.server_state
        body = self.read_body()
        if self.path != "/sms/json":
            self.reply(404, {})
            return
        if "json" in (self.headers.get("Content-Type") or ""):
            form = json.loads(body)
        else:
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        with state.lock:
            state.requests.append(form)
            answer = state.script.pop(0) if state.script else "0"
        if form.get("api_key") != state.key or form.get("api_secret") != state.secret:
            answer = "4"
        message: dict[str, Any] = {"to": form.get("to", ""), "status": answer}
        if answer == "0":
            message["message-id"] = uuid.uuid4().hex
        else:
            message["error-text"] = f"scripted status {answer}"
        self.reply(200, {"message-count": "1", "messages": [message]})


class SmsServer(_Loopback):
    handler = _SmsHandler

    def __init__(self, key: str = "sms-key", secret: str = "sms-secret"):  # noqa: S107 - test credentials
        self.key, self.secret = key, secret
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.script: list[str] = []  # Vonage status codes to answer, in order; "0" is success


class _SendGridHandler(BaseHTTPRequestHandler):
    server_state: SendGridServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        state = self.server_state
        authorization = self.headers.get("Authorization", "")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with state.lock:
            state.received.append((authorization, body))
        ok = self.path == "/v3/mail/send" and authorization == f"Bearer {state.api_key}"
        self.send_response(202 if ok else 401)  # SendGrid accepts a send with 202 and no body
        self.send_header("X-Message-Id", "sg-message-1")
        self.send_header("Content-Length", "0")
        self.end_headers()


class SendGridServer(_Loopback):
    handler = _SendGridHandler  # type: ignore[assignment]

    def __init__(self, api_key: str = "SG.loopback-key"):
        self.api_key = api_key
        self.lock = threading.Lock()
        self.received: list[tuple[str, dict]] = []  # (Authorization header, mail/send body)

    def environment(self) -> dict[str, str]:
        """What an operator sets to send through SendGrid, pointed at this server."""
        return {
            "EMAIL_BACKEND": "anymail.backends.sendgrid.EmailBackend",
            "ANYMAIL_SENDGRID_API_KEY": self.api_key,
            "ANYMAIL_SENDGRID_API_URL": f"{self.url}/v3/",
        }

    def recipients(self) -> list[str]:
        with self.lock:
            return [to["email"] for _, body in self.received for p in body["personalizations"] for to in p["to"]]


class _Collector:
    def __init__(self, server: SmtpServer):
        self.server = server

    async def handle_DATA(self, server, session, envelope) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        with self.server.lock:
            self.server.messages.append(message)  # type: ignore[arg-type]
            self.server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            hold = self.server._hold(",".join(envelope.rcpt_tos))
        while hold and not self.server.released.is_set():
            await asyncio.sleep(0.02)  # the message is taken; its "250" waits
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address.startswith("bounce"):
            return "550 5.1.1 no such user"
        if address.startswith("busy"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def wait_until_listening(port: int, alive: Callable[[], bool], what: str, tls_ca: Path | None = None) -> None:
    """Return once 127.0.0.1:`port` accepts a connection (and a TLS handshake, given the CA to trust)."""
    probe = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else None
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                if probe:
                    probe.wrap_socket(raw, server_hostname="127.0.0.1").close()
            return
        except OSError:
            if time.monotonic() > deadline or not alive():
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpServer(_Holding):
    def __init__(self) -> None:
        self._init_holding()
        self.lock = threading.Lock()
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.port = free_port()  # aiosmtpd's Controller checks it is up by connecting: port 0 will not do
        self.controller = Controller(_Collector(self), hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

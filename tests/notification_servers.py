"""Protocol servers on loopback for the notification tests and benchmark.

- `FcmServer`: the FCM HTTP v1 send API (`POST /v1/projects/<project>/messages:send`), JSON in
  and out, errors in Google's format with `error.details[].errorCode`. What a token gets back
  is scripted per token (`script`), success by default.
- `SmtpServer`: aiosmtpd, keeping every message it receives.
- `SmsServer`: a Vonage-style `POST /sms/json`.

For crash tests, the FCM and SMTP servers can hold their answers (`hold_after(n)`): they
answer n more sends, then take every further one (it counts as received: the provider got it)
without answering until `release()`, after which those answers are dropped, as they would be
for a client that died meanwhile, and the server answers normally again.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections import defaultdict
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller

FCM_STATUS = {
    "UNREGISTERED": (404, "NOT_FOUND"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "INTERNAL": (500, "INTERNAL"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
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

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _FcmHandler(_JsonHandler):
    server_state: FcmServer

    def do_POST(self) -> None:
        state = self.server_state
        body = self.read_body()
        parts = self.path.split("/")
        if len(parts) != 5 or parts[1] != "v1" or parts[2] != "projects" or parts[4] != "messages:send":
            self.reply(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})
            return
        if self.headers.get("authorization") != f"Bearer {state.token}":
            self.reply(401, {"error": {"code": 401, "message": "bad credentials", "status": "UNAUTHENTICATED"}})
            return
        message = json.loads(body)["message"]
        token = message.get("token", "")
        with state.lock:
            state.requests.append(
                {"project": parts[3], "headers": {k.lower(): v for k, v in self.headers.items()}, "message": message}
            )
            state.attempts[token] += 1
            scripted = state.script.get(token) or []
            answer = scripted.pop(0) if scripted else None
            hold = state._hold(token)
        if hold:
            state.released.wait(60)
            self.close_connection = True  # the answer is lost: its client is gone
            return
        if answer is None:
            self.reply(200, {"name": f"projects/{parts[3]}/messages/{uuid.uuid4().hex}"})
            return
        code, retry_after = answer if isinstance(answer, tuple) else (answer, None)
        status, google_status = FCM_STATUS[code]
        error = {
            "code": status,
            "message": f"scripted {code}",
            "status": google_status,
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}],
        }
        self.reply(status, {"error": error}, {"Retry-After": str(retry_after)} if retry_after is not None else None)


class FcmServer(_Loopback, _Holding):
    handler = _FcmHandler

    def __init__(self, token: str = "loopback-static-token", keep_requests: bool = True):  # noqa: S107 - a test token
        self.token = token
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.attempts: dict[str, int] = defaultdict(int)
        # token -> answers to give, in order: "UNREGISTERED" or ("UNAVAILABLE", retry_after_seconds)
        self.script: dict[str, list[Any]] = {}
        self.keep_requests = keep_requests
        self._init_holding()

    def messages_to(self, token: str) -> list[dict]:
        with self.lock:
            return [r["message"] for r in self.requests if r["message"].get("token") == token]

    def count(self) -> int:
        with self.lock:
            return sum(self.attempts.values())


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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpServer(_Holding):
    def __init__(self) -> None:
        self._init_holding()
        self.lock = threading.Lock()
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.port = _free_port()  # aiosmtpd's Controller checks it is up by connecting: port 0 will not do
        self.controller = Controller(_Collector(self), hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

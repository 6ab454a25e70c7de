"""The push benchmark's comparisons against the same FCM stand-in (bench/bench_notifications.py):

- the floor: Debian's `curl --parallel --parallel-max 100`, a C client with nothing else to do,
  sending the same FCM v1 `messages:send` requests supworker sends (URL, bearer token, the
  headers and the JSON body firebase-admin makes of our messages), from a config file;
- firebase-admin's send paths in this process, each fed the same messages
  (notifications/push_message.build_message): `messaging.send` from 100 threads per batch of
  500, as notifications/push.py sends, over libcurl (FCM_HTTP_CLIENT=curl) or requests' own
  adapter (FCM_HTTP_CLIENT=requests); and `messaging.send_each_async`, one call per batch of
  500 (its limit) on the SDK's httpx client.

Every path is clocked by the stand-in: from the first to the last valid request it received
(`windowed_fcm_server`); the client's wall time and CPU are measured around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

THREADS = 100  # notifications/fcm.SEND_THREADS: requests in flight, for curl as for the SDK
BATCH = 500  # a push batch (the job type's batch size), and send_each_async's most messages per call
WARM_UP = 100  # untimed pushes per in-process path first: connections, lazy imports


@dataclasses.dataclass
class Window:
    """The valid requests (answered 200) a stand-in received, and when the first and the last arrived."""

    requests: int = 0
    first: float = 0.0
    last: float = 0.0
    versions: Counter[str] = dataclasses.field(default_factory=Counter)  # HTTP version -> requests
    most_in_flight: int = 0  # the most requests the stand-in held at once (arrived, not yet answered)
    # Seconds from publish to arrival of each push whose data carries its publish time (`sentAt`).
    latencies: list[float] = dataclasses.field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.last - self.first

    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def protocol(self) -> str:
        return ", ".join(f"HTTP/{version}" for version in sorted(self.versions))


def windowed_fcm_server(token: str, latency_s: float = 0.0) -> Any:
    """The tests' FCM stand-in (uvicorn) that also keeps the current Window; `take_window()` returns
    it and opens the next. With `latency_s`, each answer leaves that long after its request
    arrived, as from a server far away (the event loop serves others meanwhile). Imported here,
    in the stand-in's process only."""
    from tests.notification_servers import FcmServer

    class WindowedFcmServer(FcmServer):
        def __init__(self) -> None:
            super().__init__(token=token, keep_requests=False)
            self.window = Window()
            self.in_flight = 0

        async def _answer(self, scope: dict, body: bytes) -> tuple[int, dict, dict[str, str]]:
            arrived = time.monotonic()
            with self.lock:
                self.in_flight += 1
                self.window.most_in_flight = max(self.window.most_in_flight, self.in_flight)
            try:
                answer = await super()._answer(scope, body)
                if latency_s:
                    await asyncio.sleep(max(0.0, arrived + latency_s - time.monotonic()))
            finally:
                with self.lock:
                    self.in_flight -= 1
            if answer[0] == 200:  # authorised, a messages:send path, a JSON body with a message
                with self.lock:
                    window = self.window
                    window.requests += 1
                    window.first = window.first or arrived
                    window.last = max(window.last, arrived)
                    window.versions[scope["http_version"]] += 1
                    if sent_at := json.loads(body)["message"].get("data", {}).get("sentAt"):
                        window.latencies.append(time.time() - float(sent_at))
            return answer

        def take_window(self) -> Window:
            with self.lock:
                window, self.window = self.window, Window()
            return window

    return WindowedFcmServer()


@dataclasses.dataclass
class ClientRun:
    wall: float  # seconds, the client's own clock
    cpu: float  # the client's CPU seconds (user + system)


# --- what firebase-admin sends -------------------------------------------------------------------
def request_body(message: Any) -> bytes:
    """The JSON body firebase-admin posts for `message` (`_MessagingService._message_data`, then
    requests' `json=`)."""
    from firebase_admin import messaging

    return json.dumps({"message": messaging._MessagingService.encode_message(message)}).encode()


def request_headers(token: str, url: str) -> dict[str, str]:
    """The headers firebase-admin's requests session sends with each push but its User-Agent (curl
    says its own): the SDK's FCM and metrics headers, the JSON content type and the encodings
    requests accepts, then what google-auth's `before_request` adds (the bearer token, and its
    credential type in the metrics header)."""
    import firebase_admin
    import google.oauth2.credentials
    from firebase_admin import _http_client

    headers = {
        **_http_client.METRICS_HEADERS,
        "Content-Type": "application/json",
        "Accept-Encoding": "gzip, deflate",
        # _MessagingService._fcm_headers
        "X-GOOG-API-FORMAT-VERSION": "2",
        "X-FIREBASE-CLIENT": f"fire-admin-python/{firebase_admin.__version__}",
    }
    google.oauth2.credentials.Credentials(token=token).before_request(None, "POST", url, headers)
    return headers


# --- the floor: curl --------------------------------------------------------------------------
def curl_config(url: str, headers: dict[str, str], bodies: list[bytes]) -> str:
    """A curl config file: one transfer per body (`next` starts the next), its answer's status on stdout."""

    def quoted(text: str) -> str:  # a config file's string: backslash and double quote escaped
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    # "Expect:": never wait for a 100 Continue, as notifications/curl_adapter.py.
    common = [f"header = {quoted(f'{name}: {value}')}" for name, value in headers.items()]
    common += ['header = "Expect:"', 'output = "/dev/null"', 'write-out = "%{http_code}\\n"']
    operations = []
    for body in bodies:
        operations.append("\n".join([f"url = {quoted(url)}", f"data-raw = {quoted(body.decode())}", *common]))
    return "\nnext\n".join(operations) + "\n"


def run_curl(
    url: str, headers: dict[str, str], bodies: list[bytes], work: Path, on_timed: Callable[[], None]
) -> ClientRun:
    """`curl --parallel --parallel-max 100` sending every body once; raises unless each got a 200.
    `on_timed` runs once the config file is written, before curl starts."""
    config = work / "fcm-floor.curlrc"
    config.write_text(curl_config(url, headers, bodies))
    on_timed()
    command = ["curl", "--parallel", "--parallel-max", str(THREADS), "--silent", "--show-error", "-K", str(config)]
    with (work / "fcm-floor.out").open("w+b") as out, (work / "fcm-floor.err").open("w+b") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)  # its rusage: its CPU, exactly
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        statuses = Counter(out.read().decode().split())
        errors = err.read().decode(errors="replace")
    if process.returncode or statuses != Counter({"200": len(bodies)}):
        raise RuntimeError(f"curl exited {process.returncode}, statuses {dict(statuses)}: {errors[-2000:]}")
    return ClientRun(wall, usage.ru_utime + usage.ru_stime)


def curl_version() -> str:
    """`curl 7.88.1`; raises if this curl cannot run transfers in parallel (before 7.66)."""
    help_text = subprocess.run(["curl", "--help", "all"], capture_output=True, text=True, check=True).stdout
    if "--parallel-max" not in help_text:
        raise RuntimeError("this curl has no --parallel (curl 7.66 or later needed)")
    version = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=True).stdout
    return " ".join(version.split()[:2])


# --- firebase-admin in this process -------------------------------------------------------------
def send_threads(app: Any, messages: list[Any], warm_up: list[Any], on_timed: Callable[[], None]) -> ClientRun:
    """`messaging.send` per message, THREADS at a time per batch of BATCH (notifications/push.py's
    `_send`); any failed send raises. `on_timed` runs between warm-up and the timed part."""
    from firebase_admin import messaging

    def send_all(batch_messages: list[Any]) -> None:
        for offset in range(0, len(batch_messages), BATCH):
            batch = batch_messages[offset : offset + BATCH]
            with ThreadPoolExecutor(max_workers=min(len(batch), THREADS), thread_name_prefix="fcm") as pool:
                list(pool.map(lambda message: messaging.send(message, app=app), batch))

    send_all(warm_up)
    on_timed()
    start, cpu = time.perf_counter(), time.process_time()
    send_all(messages)
    return ClientRun(time.perf_counter() - start, time.process_time() - cpu)


def send_each_async(app: Any, messages: list[Any], warm_up: list[Any], on_timed: Callable[[], None]) -> ClientRun:
    """`messaging.send_each_async` per batch of BATCH, in one event loop (its httpx client keeps
    its connections there); any failed send raises. `on_timed` runs between warm-up and the timed part."""
    from firebase_admin import messaging

    async def send_all(batch_messages: list[Any]) -> None:
        for offset in range(0, len(batch_messages), BATCH):
            response = await messaging.send_each_async(batch_messages[offset : offset + BATCH], app=app)
            if response.failure_count:
                failed = next(r.exception for r in response.responses if not r.success)
                raise RuntimeError(f"send_each_async: {response.failure_count} failed; first: {failed!r}")

    async def main() -> ClientRun:
        client = messaging._get_messaging_service(app)._async_client
        # httpx logs each request at INFO, which supworker's logging would print: a line per push
        # that the other paths do not write (production would have to silence it too).
        httpx_logger = logging.getLogger("httpx")
        level = httpx_logger.level
        httpx_logger.setLevel(logging.WARNING)
        try:
            await send_all(warm_up)
            on_timed()
            start, cpu = time.perf_counter(), time.process_time()
            await send_all(messages)
            return ClientRun(time.perf_counter() - start, time.process_time() - cpu)
        finally:
            httpx_logger.setLevel(level)
            await client.aclose()  # its connections belong to this loop

    return asyncio.run(main())


def forget_apps(apps: list[Any]) -> None:
    """Close the apps' sessions and delete them (a later run must not find them)."""
    import firebase_admin
    from firebase_admin import messaging

    for app in apps:
        with contextlib.suppress(Exception):
            messaging._get_messaging_service(app)._client.session.close()
        firebase_admin.delete_app(app)

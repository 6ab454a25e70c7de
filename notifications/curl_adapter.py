"""A requests transport adapter on libcurl (pycurl), mounted on firebase-admin's HTTP session.

firebase-admin sends every push as one HTTP request through its requests session. With
requests' own adapter, urllib3 and http.client parse each exchange in Python: about 0.6 ms
of CPU per push here, half of what a push costs the worker. libcurl does the same exchange in
C and releases the GIL meanwhile, so the sending threads really run in parallel. The SDK still
builds, authorises and sends each message and turns every answer into its own exceptions; only
the socket work moves.

Curl handles are pooled: a request takes an idle one (and its kept-alive connection) or makes
one, and gives it back after; so there are as many as requests were ever in flight at once.
Errors are raised as the requests exceptions the SDK expects from its adapter: Timeout,
SSLError, ConnectionError.
"""

from __future__ import annotations

import threading
from io import BytesIO
from typing import Any

import certifi
import pycurl
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers, select_proxy

_TIMEOUT_CODES = {pycurl.E_OPERATION_TIMEDOUT}
_SSL_CODES = {pycurl.E_SSL_CONNECT_ERROR, pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CACERT_BADFILE}


class CurlAdapter(BaseAdapter):
    """`session.mount(prefix, CurlAdapter())`: that session's requests under `prefix` go through libcurl."""

    def __init__(self, proxy: str = "") -> None:
        super().__init__()
        self.proxy = proxy  # "" : no proxy, whatever the environment says (the session decides)
        self._idle: list[pycurl.Curl] = []
        self._lock = threading.Lock()

    def _take(self) -> pycurl.Curl:
        with self._lock:
            if self._idle:
                return self._idle.pop()  # the most recently used: its connection is the likeliest alive
        curl = pycurl.Curl()
        curl.setopt(pycurl.NOSIGNAL, 1)  # timeouts without SIGALRM: requests come from threads
        curl.setopt(pycurl.TCP_NODELAY, 1)
        return curl

    def _give_back(self, curl: pycurl.Curl) -> None:
        with self._lock:
            self._idle.append(curl)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        if cert:
            raise NotImplementedError("CurlAdapter does not send client certificates")
        curl = self._take()
        try:
            return self._exchange(curl, request, timeout, verify, proxies)
        finally:
            self._give_back(curl)

    def _exchange(
        self, curl: pycurl.Curl, request: requests.PreparedRequest, timeout: Any, verify: bool | str, proxies: Any
    ) -> requests.Response:
        url, method = request.url or "", request.method or "GET"
        body = request.body.encode() if isinstance(request.body, str) else (request.body or b"")
        received = BytesIO()
        header_lines: list[bytes] = []
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.NOBODY, 1 if method == "HEAD" else 0)  # first: it resets the method
        if method in ("POST", "PUT", "PATCH") or body:
            curl.setopt(pycurl.POSTFIELDS, body)
        elif method != "HEAD":
            curl.setopt(pycurl.HTTPGET, 1)
        curl.setopt(pycurl.CUSTOMREQUEST, method)
        headers = request.headers.copy()
        # libcurl decodes only what it asked for itself: it sends this header and undoes the encoding.
        curl.setopt(pycurl.ACCEPT_ENCODING, headers.pop("Accept-Encoding", None) or "")
        # "Expect:": never wait for a 100 Continue before sending the body (libcurl asks for one
        # above 1 MiB, older releases above 1 KiB; FCM messages are at most 4 KiB).
        lines = [f"{name}: {_text(value)}" for name, value in headers.items()]
        curl.setopt(pycurl.HTTPHEADER, [*lines, "Expect:"])
        curl.setopt(pycurl.WRITEDATA, received)
        curl.setopt(pycurl.HEADERFUNCTION, header_lines.append)
        connect_s, read_s = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, int((connect_s or 300) * 1000))
        # libcurl has no per-read limit (its low-speed check averages over seconds of traffic):
        # the read timeout bounds the whole exchange, which is what FCM_TIMEOUT_SECONDS promises.
        curl.setopt(pycurl.TIMEOUT_MS, int((read_s or 300) * 1000))
        curl.setopt(pycurl.SSL_VERIFYPEER, 1 if verify else 0)
        curl.setopt(pycurl.SSL_VERIFYHOST, 2 if verify else 0)
        curl.setopt(pycurl.CAINFO, verify if isinstance(verify, str) else certifi.where())
        curl.setopt(pycurl.PROXY, select_proxy(url, proxies or {}) or self.proxy)
        try:
            curl.perform()
        except pycurl.error as exc:
            raise _requests_error(exc, request) from exc
        return self._response(request, curl.getinfo(pycurl.RESPONSE_CODE), header_lines, received.getvalue())

    def _response(
        self, request: requests.PreparedRequest, status: int, lines: list[bytes], body: bytes
    ) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        for raw in lines:
            line = raw.decode("iso-8859-1").rstrip("\r\n")
            if line.startswith("HTTP/"):  # a new response (after a 100 Continue): start again
                headers = CaseInsensitiveDict()
                response.reason = line.split(" ", 2)[2] if line.count(" ") >= 2 else ""
            elif ":" in line:
                name, value = (part.strip() for part in line.split(":", 1))
                headers[name] = f"{headers[name]}, {value}" if name in headers else value  # as urllib3 joins them
        response.headers = headers
        response.encoding = get_encoding_from_headers(headers)
        response._content = body
        response.url = request.url or ""
        response.request = request
        response.connection = self  # type: ignore[assignment]  # as requests' own adapter sets it
        return response

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for curl in idle:
            curl.close()


def _requests_error(exc: pycurl.error, request: requests.PreparedRequest) -> requests.RequestException:
    code, message = exc.args[0], exc.args[1] if len(exc.args) > 1 else ""
    text = f"libcurl error {code}: {message}"
    if code in _TIMEOUT_CODES:
        return requests.exceptions.Timeout(text, request=request)
    if code in _SSL_CODES:
        return requests.exceptions.SSLError(text, request=request)
    # Refused, unresolvable, reset, an unreadable answer: as requests' adapter, a ConnectionError.
    return requests.exceptions.ConnectionError(text, request=request)


def _text(value: str | bytes) -> str:
    """A header value as requests may hold it (str, or bytes as given) for libcurl's header lines."""
    return value.decode("latin-1") if isinstance(value, bytes) else value

"""firebase-admin's HTTP session for FCM, without requests' per-request preparation.

firebase-admin sends each push through `AuthorizedSession.request` (google-auth: the access
token, a refresh and one more try on 401), which hands it to `requests.Session.request`. That
one merges the session's settings, cookies, hooks, proxies and environment for every call, in
Python: measured here, the larger part of the client's CPU per push, more than libcurl's whole
exchange (docs/benchmarks.md, Notifications). A push needs none of it: a JSON POST with the
session's headers, no cookies, no redirects, proxies and CA read once at start-up
(notifications/fcm.py sets `trust_env` off).

`LeanAuthorizedSession` keeps google-auth's part as it is and replaces only that last step for
such requests: the body encoded as requests encodes `json=`, the headers merged as requests
merges them, and the prepared request given straight to the mounted adapter (libcurl's or
requests' own), which answers with the `requests.Response` firebase-admin reads. Any request
with something more (params, files, cookies, auth, streaming) takes requests' own path.
"""

from __future__ import annotations

from typing import Any

import requests
from google.auth.transport.requests import AuthorizedSession
from requests import PreparedRequest
from requests.compat import json as complexjson
from requests.structures import CaseInsensitiveDict

_LEAN_ARGUMENTS = frozenset({"data", "headers", "timeout", "json"})


class LeanSession(requests.Session):
    """A requests session whose plain JSON and byte requests skip the per-call merging."""

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if not _LEAN_ARGUMENTS.issuperset(kwargs):
            return super().request(method, url, **kwargs)
        body, content_type = _body(kwargs.get("data"), kwargs.get("json"))
        if body is None and kwargs.get("data") is not None:  # a form, a file: requests encodes those
            return super().request(method, url, **kwargs)
        headers: CaseInsensitiveDict[str | bytes] = CaseInsensitiveDict(self.headers)
        for name, value in (kwargs.get("headers") or {}).items():
            if value is None:
                headers.pop(name, None)  # as requests' merge_setting drops a header set to None
            else:
                headers[name] = value
        if content_type and "Content-Type" not in headers:
            headers["Content-Type"] = content_type
        prepared = PreparedRequest()
        prepared.method = method.upper()
        prepared.url = url
        prepared.headers = headers
        prepared.body = body
        if body is not None:
            headers["Content-Length"] = str(len(body))
        elif prepared.method not in ("GET", "HEAD"):
            headers["Content-Length"] = "0"
        prepared.hooks = {"response": []}
        adapter = self.get_adapter(url)
        return adapter.send(
            prepared, timeout=kwargs.get("timeout"), verify=self.verify, cert=self.cert, proxies=self.proxies
        )


class LeanAuthorizedSession(AuthorizedSession, LeanSession):
    """google-auth's AuthorizedSession (token, refresh on 401) over LeanSession's request."""


def _body(data: Any, json_value: Any) -> tuple[bytes | None, str | None]:
    """The request body and its content type, as requests makes them from `json=` or bytes/str `data`."""
    if data is None and json_value is not None:
        encoded = complexjson.dumps(json_value, allow_nan=False)
        return encoded.encode("utf-8"), "application/json"
    if isinstance(data, bytes):
        return data, None
    if isinstance(data, str):
        return data.encode("utf-8"), None
    return None, None

"""Google's OAuth 2.0 token endpoint for service accounts, on loopback.

It takes what google-auth sends for a service-account key (RFC 7523, the JWT-bearer grant),
checks it as Google does — grant type, the RS256 signature against the account's public key,
issuer, audience, lifetime — and answers `{access_token, expires_in, token_type}`. Each
access token it issues is kept with its scopes and expiry, so a loopback FCM server can accept
exactly the live tokens that carry a scope allowing FCM sends (`authorizes_fcm`).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.notification_servers import _JsonHandler, _Loopback

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth puts Google's token endpoint in every assertion's `aud`, whatever token_uri it
# posts to (google/oauth2/service_account.py); Google's endpoint requires exactly that.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
# Either scope authorises messages:send (FCM HTTP v1 reference).
FCM_SCOPES = {"https://www.googleapis.com/auth/firebase.messaging", "https://www.googleapis.com/auth/cloud-platform"}
MAX_ASSERTION_LIFETIME = 3600  # seconds, as Google allows
CLOCK_SKEW = 60  # seconds of leeway on iat and exp


@dataclass(frozen=True)
class Grant:
    access_token: str
    claims: dict
    issued_at: float  # time.time() when answered
    expires_in: int

    @property
    def scopes(self) -> set[str]:
        return set(self.claims.get("scope", "").split())

    def live(self) -> bool:
        return time.time() < self.issued_at + self.expires_in


class GrantRefused(Exception):
    """Answered as Google does: HTTP 400, {"error": ..., "error_description": ...}."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class _TokenHandler(_JsonHandler):
    server_state: TokenServer

    def do_POST(self) -> None:
        state = self.server_state
        if self.path != "/token":
            self.reply(404, {"error": "not_found"})
            return
        form = {name: values[0] for name, values in parse_qs(self.read_body().decode()).items()}
        try:
            grant = state.grant(form)
        except GrantRefused as refused:
            with state.lock:
                state.refusals.append(str(refused))
            self.reply(400, {"error": refused.error, "error_description": str(refused)})
            return
        self.reply(200, {"access_token": grant.access_token, "expires_in": grant.expires_in, "token_type": "Bearer"})


class TokenServer(_Loopback):
    """The token endpoint for one service account (`client_email`, `public_key`)."""

    handler = _TokenHandler

    def __init__(self, client_email: str, public_key: rsa.RSAPublicKey, lifetimes: tuple[int, ...] = (3600,)):
        self.client_email = client_email
        self.public_key = public_key
        self.lifetimes = list(lifetimes)  # expires_in of each grant in turn; the last one repeats
        self.lock = threading.Lock()
        self.grants: list[Grant] = []
        self.refusals: list[str] = []

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def grant(self, form: dict[str, str]) -> Grant:
        if form.get("grant_type") != JWT_BEARER:
            raise GrantRefused("unsupported_grant_type", f"grant_type must be {JWT_BEARER}")
        claims = self._verified_claims(form.get("assertion", ""))
        with self.lock:
            expires_in = self.lifetimes[min(len(self.grants), len(self.lifetimes) - 1)]
            grant = Grant(
                f"ya29.loopback-{len(self.grants) + 1}-{secrets.token_urlsafe(16)}", claims, time.time(), expires_in
            )
            self.grants.append(grant)
        return grant

    def _verified_claims(self, assertion: str) -> dict:
        parts = assertion.split(".")
        if len(parts) != 3:
            raise GrantRefused("invalid_grant", "the assertion is not a JWT")
        header, claims = json.loads(_b64decode(parts[0])), json.loads(_b64decode(parts[1]))
        if header.get("alg") != "RS256":
            raise GrantRefused("invalid_grant", f"the assertion is signed with {header.get('alg')}, not RS256")
        try:
            signed = f"{parts[0]}.{parts[1]}".encode()
            self.public_key.verify(_b64decode(parts[2]), signed, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise GrantRefused("invalid_grant", "Invalid JWT Signature.") from None
        if claims.get("iss") != self.client_email:
            raise GrantRefused("invalid_grant", f"iss {claims.get('iss')!r} is not the service account")
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            raise GrantRefused("invalid_grant", f"aud {claims.get('aud')!r} is not {GOOGLE_TOKEN_AUDIENCE}")
        now, issued, expires = time.time(), claims.get("iat", 0), claims.get("exp", 0)
        if not issued - CLOCK_SKEW <= now < expires + CLOCK_SKEW or expires - issued > MAX_ASSERTION_LIFETIME:
            raise GrantRefused(
                "invalid_grant", "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe"
            )
        if not claims.get("scope"):
            raise GrantRefused("invalid_scope", "the assertion names no scope")
        return claims

    def issued(self, access_token: str) -> Grant | None:
        with self.lock:
            return next((g for g in self.grants if g.access_token == access_token), None)

    def authorizes_fcm(self, authorization: str) -> bool:
        """What FCM checks of a send's Authorization header: a live token of ours with an FCM scope."""
        scheme, _, token = authorization.partition(" ")
        grant = self.issued(token) if scheme == "Bearer" else None
        return bool(grant and grant.live() and grant.scopes & FCM_SCOPES)

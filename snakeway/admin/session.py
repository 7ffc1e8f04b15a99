"""Session cookies of the status page: self-verifying tokens, so that every worker accepts every other's. Pure.

A browser cannot send ``Authorization: Bearer`` by itself, so the status page's login form trades a bearer
token for a session cookie. The cookie is ``<expiry>.<nonce>.<mac>``: the expiry in Unix seconds, a random
nonce (:func:`secrets.token_urlsafe`) and an HMAC-SHA256 of the two, keyed by a secret derived from every
configured bearer token. Nothing is stored: any worker (the admin connection may land on any of them)
checks a cookie with the same key, and a token file that changes (then reloaded) changes the key, which
revokes every session at once, as removing a token should.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qs

COOKIE = "snakeway_admin_session"
LIFETIME_SECONDS = 12 * 3600
_KEY_LABEL = b"snakeway admin session key\x00"


def _key(tokens: tuple[bytes, ...]) -> bytes:
    digest = hashlib.sha256(_KEY_LABEL)
    for token in sorted(tokens):
        digest.update(len(token).to_bytes(4, "big") + token)
    return digest.digest()


def _mac(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode("ascii"), hashlib.sha256).hexdigest()


def new_session(tokens: tuple[bytes, ...], now: float) -> str:
    """A new session cookie value, valid for :data:`LIFETIME_SECONDS` from ``now``."""
    payload = f"{int(now) + LIFETIME_SECONDS}.{secrets.token_urlsafe(18)}"
    return f"{payload}.{_mac(_key(tokens), payload)}"


def valid(value: str, tokens: tuple[bytes, ...], now: float) -> bool:
    """Whether ``value`` is a session cookie made with these ``tokens`` that has not expired."""
    if not tokens:
        return False
    payload, _, mac = value.rpartition(".")
    expiry, _, nonce = payload.partition(".")
    if not expiry.isdigit() or not nonce or len(expiry) > 12:
        return False
    if not hmac.compare_digest(mac.encode("ascii", "replace"), _mac(_key(tokens), payload).encode("ascii")):
        return False
    return now < int(expiry)


def from_cookie_header(headers: list[bytes]) -> str | None:
    """The session cookie's value among the ``Cookie`` header values of a request, or None."""
    for header in headers:
        for part in header.decode("latin-1").split(";"):
            name, eq, value = part.strip().partition("=")
            if eq and name == COOKIE:
                return value
    return None


def form_token(body: bytes) -> bytes:
    """The ``token`` field of the login form's body (form-encoded); empty when there is none or it is garbled."""
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return b""
    token = fields.get("token", [""])[0].strip()
    return token.encode("ascii") if token.isascii() else b""


def set_cookie(value: str) -> bytes:
    """The ``Set-Cookie`` header value for a new session."""
    return (f"{COOKIE}={value}; Path=/; Max-Age={LIFETIME_SECONDS}; HttpOnly; Secure; SameSite=Strict"
            .encode("ascii"))

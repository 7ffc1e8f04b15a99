"""Which admin endpoint a request asks for, and what its body says. Pure: no trio, no I/O.

:data:`ROUTES` is the dispatch table: a path pattern (its segments; ``{id}`` stands for one segment, a
certificate id, percent-decoded), the methods it answers and the name of the handler
(:mod:`snakeway.admin.listener` maps names to coroutines). Adding an endpoint is one entry here and one
handler there. :func:`decide` turns a request into a :class:`Call` or an :class:`Error`, in this order:
authorization (``401`` before anything else, so an unknown path without a token is ``401``, not ``404``),
the path (``404``), the method (``405`` with ``Allow``); then :func:`with_body` checks the body (``400``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from snakeway.admin import auth


@dataclass(frozen=True)
class Route:
    pattern: tuple[str, ...]
    methods: tuple[bytes, ...]
    handler: str
    # Keys a JSON object body may have (POST); a body is optional, and then {}.
    body_keys: frozenset[str] = frozenset()


CERT_ACTION_KEYS = frozenset({"wait_seconds"})

ROUTES: tuple[Route, ...] = (
    Route(("admin", "health"), (b"GET",), "health"),
    Route(("admin", "upstreams"), (b"GET",), "upstreams"),
    Route(("admin", "stats"), (b"GET",), "stats"),
    Route(("admin", "reload"), (b"POST",), "reload"),
    Route(("admin", "certs"), (b"GET",), "certs"),
    Route(("admin", "certs", "{id}", "renew"), (b"POST",), "renew", CERT_ACTION_KEYS),
    Route(("admin", "certs", "{id}", "retry"), (b"POST",), "retry", CERT_ACTION_KEYS),
    Route(("admin", "certs", "{id}", "revoke"), (b"POST",), "revoke", CERT_ACTION_KEYS | {"reason"}),
    Route(("admin", "account", "rollover-key"), (b"POST",), "rollover_key"),
    Route(("",), (b"GET",), "status"),
    Route(("login",), (b"POST",), "login"),  # form-encoded, answered without authorization
    Route(("metrics",), (b"GET",), "metrics"),
)

# The longest body an admin request may have.
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Call:
    """A request to run ``handler``; ``cert_id`` for the certificate endpoints."""

    handler: str
    cert_id: str | None = None
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Error:
    """A request refused: its status, the message of its JSON body, and extra headers."""

    status: int
    message: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    # Answered with the status page's login form (HTML) rather than JSON.
    login_form: bool = False


UNAUTHORIZED = Error(
    401, "a valid bearer token is required (Authorization: Bearer <token>)",
    ((b"www-authenticate", auth.REALM),),
)
LOGIN_REQUIRED = Error(UNAUTHORIZED.status, UNAUTHORIZED.message, UNAUTHORIZED.headers, login_form=True)


def match(path: str) -> tuple[list[Route], str | None] | None:
    """The routes whose pattern ``path`` matches (one per method set) and the ``{id}`` in it; None: no route.

    ``path`` is the request target without its query; segments are percent-decoded after splitting, so a
    certificate id with ``/`` in it (a manual certificate's file) is written with ``%2F``.
    """
    segments = path.split("/")
    if not segments or segments[0] != "":
        return None
    segments = segments[1:]
    if segments and segments[-1] == "" and len(segments) > 1:
        segments = segments[:-1]  # one trailing slash is forgiven
    found: list[Route] = []
    cert_id: str | None = None
    for route in ROUTES:
        if len(route.pattern) != len(segments):
            continue
        captured: str | None = None
        for want, got in zip(route.pattern, segments, strict=True):
            if want == "{id}":
                captured = unquote(got)
                if not captured:
                    break
            elif want != got:
                break
        else:
            found.append(route)
            cert_id = captured
    return (found, cert_id) if found else None


def parse_body(route: Route, body: bytes) -> dict[str, Any] | Error:
    """The JSON object a POST carries ({} for none), its keys checked against the route's."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return Error(400, f"the body is not JSON: {exc}")
    if not isinstance(value, dict):
        return Error(400, f"the body must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - route.body_keys)
    if unknown:
        allowed = ", ".join(sorted(route.body_keys)) or "none"
        return Error(400, f"unknown key {unknown[0]!r} in the body; allowed keys: {allowed}")
    wait = value.get("wait_seconds")
    if wait is not None and (isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 600):
        return Error(400, "wait_seconds must be a number from 0 to 600")
    if "reason" in value and not isinstance(value["reason"], str):
        return Error(400, "reason must be a string, such as \"keyCompromise\"")
    return value


def decide(
    method: bytes, target: bytes, authorization: bytes | None, tokens: tuple[bytes, ...], *, session: bool = False,
) -> Call | Error:
    """What to do with one admin request, from its head (its body, if any, goes to :func:`with_body`).

    ``session``: the request carries a valid session cookie of the status page, which authorizes it as a
    bearer token does. See the module docstring for the order of the checks; ``POST /login`` alone is
    answered without authorization, and ``/`` refused is the login form.
    """
    path = target.split(b"?", 1)[0].decode("latin-1")
    if not (session or auth.authorized(authorization, tokens)) and not (method == b"POST" and path == "/login"):
        return LOGIN_REQUIRED if path == "/" else UNAUTHORIZED
    found = match(path)
    if found is None:
        return Error(404, f"no admin endpoint {path}")
    routes, cert_id = found
    route = next((r for r in routes if method in r.methods), None)
    if route is None:
        allowed = b", ".join(m for r in routes for m in r.methods)
        return Error(405, f"{path} takes {allowed.decode()}", ((b"allow", allowed),))
    return Call(route.handler, cert_id)


def with_body(call: Call, body: bytes) -> Call | Error:
    """``call`` with the JSON object its body carries, or the error that body is."""
    route = next(r for r in ROUTES if r.handler == call.handler)
    parsed = parse_body(route, body)
    if isinstance(parsed, Error):
        return parsed
    return Call(call.handler, call.cert_id, parsed)

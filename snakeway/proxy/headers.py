"""Header rewriting between the two hops: pure code, no I/O.

Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection and never
cross the proxy: ``Connection`` and every header it names, ``Keep-Alive``,
``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade`` and any ``Proxy-*``.
h11 hands us lower-case header names, so comparisons are on those.

``Via`` (RFC 9110 §7.6.3) is added in both directions unless ``server.via =
false``. A listener's own response headers (``Strict-Transport-Security``
from ``bind.tls.hsts``) replace any of the same name an upstream sent, as
Caddy's ``header`` directive does: one listener, one policy.

Header fields whose names contain an underscore are not forwarded unless the
configuration says so (:func:`without_underscored_names`), as nginx does by
default: many application servers read ``X_Forwarded_For`` or
``Transfer_Encoding`` as the dashed name (CGI-style variables cannot tell the
two apart), so such a field could stand in for one the proxy checked or set.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

Header = tuple[bytes, bytes]
Headers = Sequence[Header]

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
VIA = b"1.1 snakeway"


# A client may not make these disappear by naming them in Connection: they
# frame or route the message, and the proxy checked them as they are.
NEVER_CONNECTION_SCOPED = frozenset({b"content-length", b"host"})


def connection_tokens(headers: Iterable[Header]) -> set[bytes]:
    """The lower-case header names listed in ``Connection`` headers."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens - NEVER_CONNECTION_SCOPED


def is_hop_by_hop(name: bytes, named: set[bytes]) -> bool:
    name = name.lower()
    return name in HOP_BY_HOP or name.startswith(b"proxy-") or name in named


def end_to_end(headers: Iterable[Header], drop: frozenset[bytes] = frozenset()) -> list[Header]:
    """The headers that may be forwarded: everything but the hop-by-hop ones and the ``drop`` names."""
    headers = list(headers)
    named = connection_tokens(headers)
    if drop:
        named |= drop
    return [(n, v) for n, v in headers if not is_hop_by_hop(n, named)]


def upstream_request_headers(
    headers: Iterable[Header],
    *,
    client_ip: str,
    scheme: str,
    host: bytes,
    drop: frozenset[bytes] = frozenset(),
    via: bool = True,
) -> list[Header]:
    """Headers for the request sent upstream.

    ``X-Forwarded-For`` gets the client appended to any it already carries;
    ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are set (a client's own
    values are replaced, never trusted); ``Via`` is appended unless ``via``
    is false; ``Host`` is the one the request was routed by.
    """
    out: list[Header] = [(b"host", host)]
    forwarded_for: list[bytes] = []
    for name, value in end_to_end(headers):
        if name == b"x-forwarded-for":
            forwarded_for.append(value)
        elif name not in _REPLACED_ON_REQUEST and name not in drop:
            out.append((name, value))
    forwarded_for.append(client_ip.encode("ascii"))
    out.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    out.append((b"x-forwarded-proto", scheme.encode("ascii")))
    out.append((b"x-forwarded-host", host))
    if via:
        out.append((b"via", VIA))
    return out


_REPLACED_ON_REQUEST = frozenset({b"host", b"x-forwarded-proto", b"x-forwarded-host"})


def downstream_response_headers(
    headers: Iterable[Header], *, via: bool = True, own: tuple[Header, ...] = ()
) -> list[Header]:
    """Headers for the response relayed to the client.

    Args:
      headers: the upstream response's.
      via: append ``Via: 1.1 snakeway``.
      own: the listener's own response headers (lower-case names); an
        upstream header of the same name is dropped in their favour.
    """
    if own:
        out = end_to_end(headers, _names(own))
        out.extend(own)
    else:
        out = end_to_end(headers)
    if via:
        out.append((b"via", VIA))
    return out


@functools.lru_cache(maxsize=64)
def _names(headers: tuple[Header, ...]) -> frozenset[bytes]:
    # A listener's own headers are one tuple for the life of its configuration: their names once.
    return frozenset(name for name, _ in headers)


def has_underscored_name(headers: list[Header]) -> bool:
    """Whether a field name in ``headers`` contains ``_``; values do not count.

    Most browser requests carry a ``_`` in a value (``x86_64`` in the
    User-Agent, ``_ga`` cookies, ``utm_`` in the query), few in a name: this
    test spares them :func:`without_underscored_names`' copy. One join and one
    search cost less than a loop over the fields, or a regular expression over
    the raw head.
    """
    return b"_" in b"\n".join([name for name, _ in headers])


def without_underscored_names(headers: Iterable[Header]) -> list[Header]:
    """``headers`` less the fields whose names contain ``_``."""
    return [(n, v) for n, v in headers if n.find(b"_") < 0]


def header_list(headers: Iterable[Header]) -> list[Header]:
    """``headers`` as a plain list, for code that looks at them more than once.

    An h11 event's ``headers`` is a ``Sequence`` whose iterator calls a Python
    ``__getitem__`` per item and stops on an ``IndexError``: walking it is
    several times slower than walking a list, so the proxy walks it once.
    """
    return list(headers)


def get_header(headers: Iterable[Header], name: bytes) -> bytes | None:
    """The first value of ``name`` (lower-case), or None."""
    for n, v in headers:
        if n == name:
            return v
    return None


def has_token(headers: Iterable[Header], name: bytes, token: bytes) -> bool:
    """True when a comma-separated header ``name`` lists ``token`` (case-insensitive)."""
    return any(
        n == name and token in (t.strip().lower() for t in v.split(b","))
        for n, v in headers
    )

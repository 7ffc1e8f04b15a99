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

Each message's header list is walked once on the request path. A request's
headers become a :class:`RequestHeaders` (:meth:`RequestHeaders.of`), which
gathers in that walk what every rule reads: ``Host``, the framing headers,
``Connection`` and ``Upgrade``, and the fields that may go upstream. The
smuggling checks (:mod:`snakeway.proxy.strict`), the router, the forwarder,
:func:`upstream_request_headers` and the access log read it instead of
searching the list again. A response's headers are checked and rewritten in
one walk by :func:`relayed_response_headers`. Both give the same answers as
the general functions below (:func:`end_to_end` and the others), which take
any list of lower-case pairs and which the tests hold them to.
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
    headers: Iterable[Header] | RequestHeaders,
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

    A :class:`RequestHeaders` has its forwardable fields sorted out already:
    they are copied (and filtered again only for the rare field that needs
    it); any other iterable is walked here.
    """
    out: list[Header] = [(b"host", host)]
    if type(headers) is RequestHeaders:
        forwarded_for = headers.upstream_fields(out, drop)
    else:
        forwarded_for = []
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


def relayed_response_headers(
    headers: Iterable[Header], *, via: bool = True, own: tuple[Header, ...] = ()
) -> list[Header] | None:
    """:func:`downstream_response_headers` of an upstream response, in one walk; None if its framing is ambiguous.

    A response with both Content-Length and Transfer-Encoding could be
    delimited either way (RFC 9112 section 6.3): it is not relayed (None).
    Otherwise the result equals :func:`downstream_response_headers`'. Names
    are lower-case, as h11 gives them.
    """
    dropped = _names(own) if own else _NO_NAMES
    out: list[Header] = []
    append = out.append
    connection: list[bytes] | None = None
    length = coded = False
    for pair in pairs(headers):
        name = pair[0]
        role = _RESPONSE_ROLES.get(name)
        if role is None:
            if name not in dropped and not (name[:1] == b"p" and name.startswith(b"proxy-")):
                append(pair)
        elif role is _LENGTH:
            length = True
            if name not in dropped:  # never connection-scoped
                append(pair)
        elif role is _CODING:
            coded = True
        elif role is _CONNECTION:
            if connection is None:
                connection = []
            connection.append(pair[1])
        # else hop-by-hop: dropped
    if length and coded:
        return None
    if connection is not None:
        named = _named_by(connection)
        if named:
            out = [pair for pair in out if pair[0] not in named]
    if own:
        out.extend(own)
    if via:
        out.append(_VIA_HEADER)
    return out


@functools.lru_cache(maxsize=64)
def _names(headers: tuple[Header, ...]) -> frozenset[bytes]:
    # A listener's own headers are one tuple for the life of its configuration: their names once.
    return frozenset(name for name, _ in headers)


_NO_NAMES: frozenset[bytes] = frozenset()
_VIA_HEADER = (b"via", VIA)

# What the one walk over a message's headers does with a field, by lower-case name.
_LENGTH, _CODING, _CONNECTION, _HOP, _HOST, _UPGRADE, _FORWARDED_FOR, _REPLACED, _AGENT, _NOTED = range(10)
_RESPONSE_ROLES = {
    b"content-length": _LENGTH,
    b"transfer-encoding": _CODING,
    b"connection": _CONNECTION,
    **dict.fromkeys(HOP_BY_HOP - {b"transfer-encoding", b"connection"}, _HOP),
}
_REQUEST_ROLES = {
    **_RESPONSE_ROLES,
    b"host": _HOST,
    b"upgrade": _UPGRADE,  # hop-by-hop, and read for WebSocket upgrades
    b"x-forwarded-for": _FORWARDED_FOR,
    b"x-forwarded-proto": _REPLACED,
    b"x-forwarded-host": _REPLACED,
    b"user-agent": _AGENT,
    b"expect": _NOTED,
}
# Fields forwarded as they are unless a caller drops them by name: the walk notes whether one is there,
# so that the usual request is not filtered again for them.
_NOTED_NAMES = frozenset(name for name, role in _REQUEST_ROLES.items() if role is _NOTED)
# Connection values that name only hop-by-hop fields, spelt as clients send them: no set of names to make.
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade", b"Keep-Alive", b"Close", b"Upgrade"})


def pairs(headers: Iterable[Header]) -> list[Header]:
    """``headers`` as a plain list of ``(name, value)``.

    An h11 ``Headers`` holds a list of ``(raw name, name, value)`` triples
    behind a ``Sequence`` whose iterator calls a Python ``__getitem__`` per
    item: that list is read directly, several times faster.
    """
    triples = getattr(headers, "_full_items", None)
    if triples is not None:
        return [(name, value) for _, name, value in triples]
    return list(headers)


def _named_by(connection: list[bytes]) -> frozenset[bytes] | set[bytes]:
    """The fields the ``Connection`` values name beyond the hop-by-hop ones (those are dropped anyway)."""
    for value in connection:
        if value not in _PLAIN_CONNECTION:
            return connection_tokens((b"connection", v) for v in connection) - HOP_BY_HOP
    return _NO_NAMES


class RequestHeaders(list[Header]):
    """A request's headers as a list of ``(name, value)``, with what the proxy's rules read of them.

    Made by :meth:`of` in one walk over the fields. Being a list, it goes
    wherever a request's header list goes (the access log, the general
    functions of this module).

    Attributes:
      host: the ``Host`` value (the last one; h11 refuses a second), or None.
      agent: the ``User-Agent`` value (the last one), or None.
      content_length: the first ``Content-Length`` value, or None.
      chunked: whether a ``Transfer-Encoding`` field is present.
      connection: the ``Connection`` values, or None without one.
      upgrade: the ``Upgrade`` values, or None without one.
    """

    __slots__ = ("_end_to_end", "_forwarded_for", "_noted", "agent", "chunked", "connection", "content_length",
                 "host", "upgrade")

    host: bytes | None
    agent: bytes | None
    content_length: bytes | None
    chunked: bool
    connection: list[bytes] | None
    upgrade: list[bytes] | None
    _noted: bool  # a field some callers drop (``Expect``) is there
    _end_to_end: list[Header]  # what goes upstream as it is, unless a Connection value names it
    _forwarded_for: list[bytes]

    @classmethod
    def of(cls, headers: Iterable[Header]) -> RequestHeaders:
        """``headers`` (lower-case names, as h11 gives them) sorted out in one walk."""
        self = cls(pairs(headers))
        self.host = self.agent = self.content_length = None
        self.chunked = self._noted = False
        self.connection = self.upgrade = None
        passing: list[Header] = []  # end to end, less Host and X-Forwarded-*: what goes upstream as it is
        forwarded_for: list[bytes] = []
        keep = passing.append
        roles = _REQUEST_ROLES
        for pair in self:
            name = pair[0]
            role = roles.get(name)
            if role is None:
                if not (name[:1] == b"p" and name.startswith(b"proxy-")):
                    keep(pair)
            elif role is _HOST:
                self.host = pair[1]
            elif role is _AGENT:
                self.agent = pair[1]
                keep(pair)
            elif role is _LENGTH:
                if self.content_length is None:
                    self.content_length = pair[1]
                keep(pair)
            elif role is _CODING:
                self.chunked = True
            elif role is _FORWARDED_FOR:
                forwarded_for.append(pair[1])
            elif role is _CONNECTION:
                if self.connection is None:
                    self.connection = []
                self.connection.append(pair[1])
            elif role is _UPGRADE:
                if self.upgrade is None:
                    self.upgrade = []
                self.upgrade.append(pair[1])
            elif role is _NOTED:
                self._noted = True
                keep(pair)
            # else _HOP or _REPLACED: never forwarded as sent
        self._end_to_end = passing
        self._forwarded_for = forwarded_for
        return self

    def upstream_fields(self, out: list[Header], drop: frozenset[bytes]) -> list[bytes]:
        """Append to ``out`` the fields forwarded as they are, less the ``drop`` names; returns the
        ``X-Forwarded-For`` values to extend (a new list). See :func:`upstream_request_headers`."""
        fields = self._end_to_end
        forwarded_for = self._forwarded_for
        named = _named_by(self.connection) if self.connection is not None else _NO_NAMES
        if named:
            fields = [pair for pair in fields if pair[0] not in named]
            if b"x-forwarded-for" in named:
                forwarded_for = []
        if drop and (self._noted or not drop <= _NOTED_NAMES):
            fields = [pair for pair in fields if pair[0] not in drop]
        out += fields
        return list(forwarded_for)

    def wants_websocket(self) -> bool:
        """Whether the request asks for a WebSocket upgrade (``Upgrade: websocket`` and ``Connection: upgrade``)."""
        upgrade, connection = self.upgrade, self.connection
        if upgrade is None or connection is None:
            return False
        return has_token([(b"upgrade", v) for v in upgrade], b"upgrade", b"websocket") and has_token(
            [(b"connection", v) for v in connection], b"connection", b"upgrade"
        )


def request_headers(headers: Iterable[Header]) -> RequestHeaders:
    """``headers`` as a :class:`RequestHeaders`: itself when it is one already."""
    return headers if type(headers) is RequestHeaders else RequestHeaders.of(headers)


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

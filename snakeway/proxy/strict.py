"""Parser strictness that a proxy owes its upstreams: pure code, no I/O.

h11 parses leniently where RFC 9112 lets a lone server be lenient, but a proxy
that forwards what it parsed must not disagree with the next parser about
where a message ends (request smuggling, RFC 9112 sections 6.3 and 11.2).
These checks run on every request before anything is forwarded:

* the raw head, as it arrived: its size (431 even when it came in one piece,
  which h11's own limit does not see) and obs-fold continuation lines;
* the parsed request: both Content-Length and Transfer-Encoding, a
  Transfer-Encoding in HTTP/1.0, a version other than 1.0/1.1, TRACE.

A rejection closes the connection: nothing that follows it is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

_HEAD_END = re.compile(rb"\r?\n\r?\n")
# A header line that begins with whitespace continues the previous one.
_OBS_FOLD = re.compile(rb"\n[ \t]")


@dataclass(frozen=True)
class Rejection:
    status: int
    reason: str


class HeadScanner:
    """Watches the bytes of one request head as they arrive.

    Feed it every chunk read while a request head is incomplete; it answers
    a :class:`Rejection` as soon as the head is too large or malformed.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._buf = bytearray()
        self.complete = False

    def reset(self) -> None:
        self._buf.clear()
        self.complete = False

    @property
    def started(self) -> bool:
        return _leading_newlines(self._buf) < len(self._buf)

    def feed(self, data: bytes) -> Rejection | None:
        if self.complete:
            return None
        seen = len(self._buf)
        self._buf += data
        lead = _leading_newlines(self._buf)
        # Only the new bytes (and the 3 before them) can complete the end of
        # the head: a head trickled in byte by byte is scanned once, not N times.
        match = _HEAD_END.search(self._buf, max(lead, seen - 3))
        end = match.end() if match else None
        size = (end if end is not None else len(self._buf)) - lead
        if size > self._max:
            return Rejection(431, "request header fields too large")
        if end is None:
            return None
        self.complete = True
        return check_head(self._buf[lead:end])


def _leading_newlines(buf: bytearray) -> int:
    """How many CR/LF bytes lead ``buf`` (RFC 9112 lets a server skip them before a request)."""
    if buf[:1] not in (b"\r", b"\n"):
        return 0  # the usual case; spares lstrip() a copy of the whole buffer
    return len(buf) - len(buf.lstrip(b"\r\n"))


def check_head(head: bytes | bytearray) -> Rejection | None:
    """Checks on the raw bytes of a complete head that h11 would accept."""
    # Obs-fold: a line after the first that starts with a space or a tab. The
    # character after each LF is the same whether or not a CR precedes it.
    if _OBS_FOLD.search(head):
        return Rejection(400, "obsolete line folding in header")
    return None


def check_request(request: h11.Request, headers: list[tuple[bytes, bytes]]) -> Rejection | None:
    """Checks on a parsed request, before it is routed; ``headers`` are its headers as a list."""
    if request.http_version not in (b"1.0", b"1.1"):
        return Rejection(505, "HTTP version not supported")
    names = [name for name, _ in headers]
    if b"transfer-encoding" in names:
        if b"content-length" in names:
            return Rejection(400, "both Content-Length and Transfer-Encoding")
        if request.http_version == b"1.0":
            return Rejection(400, "Transfer-Encoding in an HTTP/1.0 request")
    if request.method == b"TRACE":
        return Rejection(405, "TRACE is not allowed")
    if request.method == b"CONNECT":
        return Rejection(405, "CONNECT is not allowed")
    return None


@dataclass(frozen=True)
class Target:
    """Where a request goes: its host (for routing) and origin-form target."""

    host: bytes
    path: str
    target: bytes


def request_target(request: h11.Request, headers: list[tuple[bytes, bytes]]) -> Target | Rejection:
    """Splits the request target; an absolute-form target wins over Host. ``headers``: as a list."""
    raw = request.target
    host = b""
    for name, value in headers:
        if name == b"host":
            host = value
    if raw.startswith(b"/"):
        origin = raw
    elif raw[:7].lower() == b"http://" or raw[:8].lower() == b"https://":
        try:
            parts = urlsplit(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return Rejection(400, "malformed request target")
        if not parts.netloc or "@" in parts.netloc:
            return Rejection(400, "malformed request target")
        host = parts.netloc.encode("ascii")
        origin = (parts.path or "/").encode("ascii")
        if parts.query:
            origin += b"?" + parts.query.encode("ascii")
    elif raw == b"*" and request.method == b"OPTIONS":
        origin = raw
    else:
        return Rejection(400, "malformed request target")
    path = origin.split(b"?", 1)[0].decode("latin-1")
    return Target(host=host, path=path, target=origin)

"""Parser strictness that a proxy owes its upstreams: pure code, no I/O.

h11 parses leniently where RFC 9112 lets a lone server be lenient, but a proxy
that forwards what it parsed must not disagree with the next parser about
where a message ends (request smuggling, RFC 9112 sections 6.3 and 11.2).
These checks run on every request before anything is forwarded:

* the raw head, as it arrived: its size (431 even when it came in one piece,
  which h11's own limit does not see), its number of header fields (431, so
  that a flood of tiny fields is refused before h11 parses it) and obs-fold
  continuation lines;
* the parsed request: both Content-Length and Transfer-Encoding, a
  Transfer-Encoding in HTTP/1.0, a version other than 1.0/1.1, TRACE;
* its target (:func:`request_target`): a Host or an absolute-form authority
  that is not ``uri-host [":" port]`` (RFC 9112 section 3.2; h11 already
  refuses a second Host), and a path that cannot be normalised
  (:mod:`snakeway.uri`) are 400.

Empty lines before a request line are skipped (RFC 9112 section 2.2).
A rejection closes the connection: nothing that follows it is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from snakeway.hostnames import valid_authority
from snakeway.proxy.headers import request_headers
from snakeway.uri import TargetError, normalize_path

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
    Empty lines before the request line are dropped as they come, so a client
    sending nothing else grows no buffer.

    Args:
      max_bytes: the largest head (request line and header fields), 431 above.
      max_fields: the most header fields, 431 above.
    """

    def __init__(self, max_bytes: int, max_fields: int) -> None:
        self._max = max_bytes
        self._max_fields = max_fields
        self._buf = bytearray()
        self._head: bytes | bytearray = self._buf  # what holds the head: _buf, or a whole head's own read
        self._end = 0  # where the head ends in _head, once complete
        self.complete = False

    def reset(self) -> None:
        self._buf.clear()
        self._head = self._buf
        self.complete = False

    @property
    def started(self) -> bool:
        """Whether a byte of the request line has arrived (not just empty lines)."""
        return self.complete or bool(self._buf)

    def feed(self, data: bytes | bytearray) -> Rejection | None:
        if self.complete or not data:  # nothing new (a connection feeds what the last request left, often nothing)
            return None
        if not self._buf and type(data) is bytes and data[:1] not in NEWLINES:
            # A head's first read, which holds all of it in most requests.
            whole = data.find(b"\r\n\r\n") + 4
            if 4 <= whole <= self._max:
                lines = data.count(b"\n", 0, whole - 4)
                if lines == data.count(b"\r\n", 0, whole - 4):
                    return self._whole(data, whole, lines)
        seen = len(self._buf)
        self._buf += data
        if not seen and self._buf[:1] in NEWLINES:
            # Empty lines before the request line: a server ignores them
            # (RFC 9112 section 2.2). The usual case skips lstrip()'s copy.
            del self._buf[: len(self._buf) - len(self._buf.lstrip(b"\r\n"))]
        # Only the new bytes (and the 3 before them) can complete the end of
        # the head: a head trickled in byte by byte is scanned once, not N times.
        match = _HEAD_END.search(self._buf, max(0, seen - 3))
        end = match.end() if match else None
        size = end if end is not None else len(self._buf)
        if size > self._max:
            return Rejection(431, "request header fields too large")
        if end is None:
            return None
        self.complete = True
        self._end = end
        return check_head(self._buf[:end], self._max_fields)

    def _whole(self, data: bytes, end: int, fields: int) -> Rejection | None:
        """:meth:`feed` of a read that starts a head and holds all of it (``end`` bytes, no more than allowed),
        every line ending in CRLF.

        Then the first CRLF CRLF ends the head (no bare LF can end it sooner),
        its field count is its line count before that, and ``data`` itself is
        kept as the head, uncopied: three scans in C and one search for an
        obs-fold, instead of the general path's regular expression, copy and
        count. The same answers as that path (``tests/test_glue_scanner.py``).
        """
        self.complete = True
        self._head = data
        self._end = end
        if fields > self._max_fields:
            return Rejection(431, f"more than {self._max_fields} header fields")
        if _OBS_FOLD.search(data, 0, end):
            return Rejection(400, "obsolete line folding in header")
        return None

    def head_contains(self, needle: bytes) -> bool:
        """Whether the head (all of it once ``complete``, else what came of it) contains ``needle``.

        A test of the raw bytes spares a test per parsed field when the answer is no.
        """
        head = self._head
        return head.find(needle, 0, self._end if self.complete else len(head)) >= 0


# Bytes that may precede a request line, each one as a one-byte slice.
NEWLINES = (b"\r", b"\n")


def check_head(head: bytes | bytearray, max_fields: int) -> Rejection | None:
    """Checks on the raw bytes of a complete head that h11 would accept."""
    # Every line ends in an LF: the request line, one per field, the empty one.
    # A field line takes 3 bytes at least ("a:\n"): a shorter head is spared the count.
    if len(head) > 3 * max_fields and head.count(b"\n") - 2 > max_fields:
        return Rejection(431, f"more than {max_fields} header fields")
    # Obs-fold: a line after the first that starts with a space or a tab. The
    # character after each LF is the same whether or not a CR precedes it.
    if _OBS_FOLD.search(head):
        return Rejection(400, "obsolete line folding in header")
    return None


def check_request(request: h11.Request, headers: list[tuple[bytes, bytes]]) -> Rejection | None:
    """Checks on a parsed request, before it is routed.

    ``headers`` are its headers as a list; a
    :class:`~snakeway.proxy.headers.RequestHeaders` is read without a walk.
    """
    if request.http_version not in (b"1.0", b"1.1"):
        return Rejection(505, "HTTP version not supported")
    fields = request_headers(headers)
    if fields.chunked:
        if fields.content_length is not None:
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
    """Where a request goes: its host and normalised path (for routing) and the origin-form target to forward."""

    host: bytes
    path: str
    target: bytes


def request_target(
    request: h11.Request, headers: list[tuple[bytes, bytes]], valid_host: bytes | None = None
) -> Target | Rejection:
    """Where a request goes; an absolute-form target wins over Host. ``headers``: as a list.

    The path is normalised (:func:`~snakeway.uri.normalize_path`): the
    :class:`Target` carries the normalised path for routing and the target to
    forward, which is that same path with the query as it was sent. A ``#``
    anywhere in the target is refused: a fragment is never sent in a request
    (RFC 9112 section 3.2), and servers that cut the path at it would act on
    another path than the one routed.

    Args:
      request: the parsed request.
      headers: its headers, as a list (a
        :class:`~snakeway.proxy.headers.RequestHeaders` is read without a walk).
      valid_host: a Host value already found valid on this connection (the
        ``host`` of its previous :class:`Target`): a client sends the same one
        on every request, and it is not checked again.
    """
    raw = request.target
    host = request_headers(headers).host or b""  # one at most: h11 refuses a second
    if host and host != valid_host and not valid_authority(host):
        return Rejection(400, "invalid Host header")
    if b"#" in raw:
        return Rejection(400, "a fragment (#) in the request target")
    if raw.startswith(b"/"):
        origin = raw
    elif raw[:7].lower() == b"http://" or raw[:8].lower() == b"https://":
        try:
            parts = urlsplit(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return Rejection(400, "malformed request target")
        host = parts.netloc.encode("ascii")
        if not host or not valid_authority(host):
            return Rejection(400, "invalid host in the request target")
        origin = (parts.path or "/").encode("ascii")
        if parts.query:
            origin += b"?" + parts.query.encode("ascii")
    elif raw == b"*" and request.method == b"OPTIONS":
        return Target(host=host, path="*", target=raw)
    else:
        return Rejection(400, "malformed request target")
    path, question, query = origin.partition(b"?")
    text = path.decode("latin-1")
    # Whether normalize_path() could change or refuse the path: every request
    # asks, so the test is here, on str (a bytes substring test costs several
    # times as much in CPython). A dot-segment starts after "/", "\\" or an
    # escape ("%2F", "%5C"), and every other form it normalises has a "%".
    if "%" in text or "/." in text or "\\." in text:
        try:
            normal = normalize_path(path)
        except TargetError as exc:
            return Rejection(400, exc.reason)
        if normal != path:
            text, origin = normal.decode("latin-1"), normal + question + query
    return Target(host=host, path=text, target=origin)

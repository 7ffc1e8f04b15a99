"""The upstream hop's HTTP/1.1 client side, without I/O: requests as bytes, responses through llhttp.

Theory of operation
-------------------
An :class:`UpstreamWire` belongs to one upstream connection and carries one
exchange at a time. :meth:`UpstreamWire.start_request` writes the request
head (the request came out of h11's parser on the client hop, or was written
by snakeway from checked values, so it is not checked again); body bytes are
framed as the request's (raw for a Content-Length, chunks re-framed when the
client's body was chunked); :meth:`UpstreamWire.end_request` ends it.

The response is fed to llhttp (``httptools.HttpResponseParser``) as it
arrives, with llhttp's strict defaults: no bare CR or LF, no obs-fold, no
invalid header names or values, no duplicate Content-Length and never both
Content-Length and Transfer-Encoding. Its callbacks fill :attr:`status`,
:attr:`reason` and :attr:`headers` (lower-case names) once the final head is
in, append body bytes to :attr:`body` (the caller takes them), and set
:attr:`complete` at the response's end.

Heads are cut out of the input: while no final head is in, the wire looks
for the first CRLF CRLF (strict parsing makes it the only way a head ends;
a 3-byte carry finds one split between two reads) and feeds llhttp that
head alone, then the rest. This gives the wire what llhttp does not: the
exact size of each head (over ``max_head`` bytes is refused before llhttp
buffers it), where each message starts (so a status line must begin with
``HTTP/``: llhttp also reads ``RTSP/`` and ``ICE/``), and a way to stop at the
end of a head, which a response to HEAD needs. llhttp cannot be told that a
response answers HEAD (httptools does not expose its skip-body flag), so for
HEAD it gets the heads only and its parser, left expecting a body, is
replaced before the next exchange.

On top of llhttp the wire also refuses what h11 refused and llhttp lets
through: a Transfer-Encoding other than one ``chunked``, versions other than
HTTP/1.x, status codes under 100, and control characters in the reason
phrase; and a 1xx response that claims a body (RFC 9110 §15.2: it has none).
httptools buffers a header field until it ends, trailer fields too: body
bytes that carry no data (chunk sizes, trailers) are bounded as a head is.

Framing follows RFC 9112 §6.3: a response to HEAD, a 1xx, 204 and 304 have no
body; 1xx responses other than 101 are skipped; a 101 is a response only to a
request that asked for an upgrade (and named it: ``Upgrade`` and
``Connection: upgrade``), and the bytes after its head are :attr:`trailing`
(the tunnel's first bytes); a response with neither length nor chunks ends
when the upstream closes (:meth:`feed_eof`).

Reuse: :meth:`reusable` is true only when the request was written to its end,
the response read to its end, the response was HTTP/1.1 without
``Connection: close`` (an HTTP/1.0 upstream is never reused, as h11 never
reused one) and nothing arrived after it. Bytes past a body start a message
llhttp would parse: the wire stops it there (``on_message_begin``) and the
connection is not reused. The pool asks, and calls :meth:`next_cycle` for the next exchange.

Moved bodies: the rest of a body with a Content-Length (:attr:`body_left`
bytes once the fed bytes are parsed) may go from socket to socket without
being read (``splice``). The caller then says so with :meth:`body_moved`:
the bytes count as parsed, the response is complete once they are all
there, and whether anything followed them decides reuse as it does for
bytes fed. llhttp, which never saw them, still expects them: its parser is
replaced before the next exchange, as after a HEAD.
"""

from __future__ import annotations

import re
from typing import NamedTuple, final

import httptools

from snakeway.errors import SnakewayError
from snakeway.proxy.headers import has_token

Header = tuple[bytes, bytes]

# Largest response head (status line + headers) read from an upstream.
MAX_RESPONSE_HEAD = 64 * 1024

# A reason phrase is HTAB, SP, VCHAR and obs-text (RFC 9112 §4); llhttp lets other controls through.
_BAD_REASON = re.compile(rb"[^\t\x20-\x7e\x80-\xff]").search
_VERSIONS = frozenset({"1.1", "1.0"})
_NO_BODY = frozenset({204, 304})
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_CRLF = b"\r\n"


class BadResponse(SnakewayError):
    """The upstream's response breaks HTTP/1.1 (or is one snakeway refuses): answer 502, do not reuse."""


class _Stop(Exception):
    """Raised in a callback to stop llhttp: what follows is not part of this response."""


class UpstreamRequest(NamedTuple):
    """A request for the upstream: method, target, header list; a chunked body is re-framed as chunks."""

    method: bytes
    target: bytes
    headers: list[Header]
    chunked: bool = False


@final
class UpstreamWire:
    """One upstream connection's HTTP/1.1 client state (see the module docstring).

    Args:
      max_head: the largest response head accepted, in bytes.

    Error handling:
      :meth:`feed` and :meth:`feed_eof` raise :class:`BadResponse`; the
      connection is then not reusable.
    """

    def __init__(self, max_head: int = MAX_RESPONSE_HEAD) -> None:
        self._max_head = max_head
        self._parser: httptools.HttpResponseParser | None = None
        self._head_only = False
        self._upgrade = False
        self._chunked = False
        self._request_done = False
        self._moved = False
        self.next_cycle()

    def next_cycle(self) -> None:
        """Forget the last exchange; the connection carries the next one."""
        if self._head_only or self._moved:
            self._parser = None  # left waiting for a body that never comes (or went past it)
            self._moved = False
        self.status = 0  # the final response's (or a 101's), 0 until its head is in
        self.reason = b""
        self.headers: list[Header] = []
        self.body: list[bytes] = []  # body bytes not yet taken by the caller
        self.complete = False
        self.body_left = -1  # bytes of a Content-Length body still to come, past those fed; negative: no such body
        self._length = b""  # the head's Content-Length value
        self.trailing = b""  # bytes after a 101's head
        self._request_done = False
        self._keep = False
        self._extra = False  # something arrived after the response
        self._until_close = False
        self._in_head = True  # fields are the head's, not trailers
        self._fields: list[Header] = []
        self._status_text = b""
        self._framing = False  # the head has a Content-Length or a Transfer-Encoding
        self._codings = 0  # Transfer-Encoding fields in the head
        self._chunked_te = False  # one of them says exactly "chunked"
        self._fed = 0  # bytes of the head being read
        self._stalled = 0  # bytes of the body fed since the last that carried data
        self._carry = b""  # the last bytes of a head fed, for a CRLF CRLF split between two reads
        self._at_start = True  # the first bytes of a message are still to be checked
        self._prefix = b""  # those seen so far
        self._error = ""

    # -- request ---------------------------------------------------------

    def start_request(self, request: UpstreamRequest, *, upgrade: bool = False) -> bytes:
        """The request head; ``upgrade``: the request asks for one, and a 101 may answer it."""
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)
        self._head_only = request.method == b"HEAD"
        self._upgrade = upgrade
        self._chunked = request.chunked
        out = [request.method, b" ", request.target, b" HTTP/1.1\r\n"]
        for name, value in request.headers:
            out += (name, b": ", value, b"\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    def request_body(self, data: bytes) -> bytes:
        """Request body bytes as they go upstream."""
        if self._chunked and data:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def end_request(self) -> bytes:
        """The end of the request body (the last chunk, for a chunked one)."""
        self._request_done = True
        return b"0\r\n\r\n" if self._chunked else b""

    # -- response --------------------------------------------------------

    def feed(self, data: bytes | bytearray) -> None:
        """Parse ``data`` (not empty), read from the upstream.

        Raises:
          BadResponse: the response is invalid or refused.
        """
        if self.complete:
            self._extra = True
            return
        parser = self._parser
        assert parser is not None, "a response before its request"
        try:
            if self.status:
                self._feed_body(parser, data)
            else:
                self._feed_heads(parser, data)
        except httptools.HttpParserError as exc:
            if self.complete:
                self._extra = True  # what followed the response did not parse: it is not reused
                return
            raise BadResponse(self._error or str(exc)) from None

    def feed_eof(self) -> None:
        """The upstream closed the connection.

        Raises:
          BadResponse: the response was not complete.
        """
        if self.complete:
            self._extra = True
        elif self.status and self._until_close:
            self.complete = True
        else:
            raise BadResponse("upstream closed the connection")

    def close(self) -> None:
        """The connection is closed: drop the parser (it holds the wire's callbacks, a reference cycle)."""
        self._parser = None

    def body_moved(self, size: int, *, followed: bool) -> None:
        """The next ``size`` bytes of the body went from the upstream to the client unread.

        ``followed``: something came after them (the connection was
        readable: bytes, or the close), so the connection is not reused. With
        fewer than :attr:`body_left` bytes the response stays incomplete; the
        caller goes on with :meth:`feed_eof` (the upstream ended it early).
        """
        if not 0 <= size <= self.body_left:
            raise ValueError(f"{size} bytes moved of a body with {self.body_left} to come")
        self._moved = True
        self.body_left -= size
        if not self.body_left:
            self.complete = True
            if followed:
                self._extra = True

    def take_body(self) -> list[bytes]:
        """The body bytes parsed since the last call."""
        body, self.body = self.body, []
        return body

    def reusable(self) -> bool:
        """Both the request and the response are complete, and the connection may carry another."""
        return self.complete and self._request_done and self._keep and not self._extra

    def _feed_heads(self, parser: httptools.HttpResponseParser, data: bytes | bytearray) -> None:
        # llhttp gets each head alone, cut at its CRLF CRLF (see the module docstring), then the body.
        # Cut through a memoryview: the body after a head is not copied.
        view = memoryview(data)
        pos, size = 0, len(data)
        while pos < size:
            if self._at_start:
                self._check_start(data, pos)
            end = self._head_end(data, pos)
            if end < 0:
                self._count_head(size - pos)
                parser.feed_data(view[pos:])
                self._carry = (self._carry + bytes(data[max(pos, size - 3) :]))[-3:]
                return
            self._count_head(end - pos)
            self._carry = b""
            try:
                parser.feed_data(view[pos:end])
            except httptools.HttpParserUpgrade:
                # llhttp stops after a 101's head: what follows belongs to the tunnel.
                self.trailing = bytes(view[end:])
                return
            pos = end
            if self.complete:  # a response to HEAD, 204, 304 or Content-Length: 0
                if pos < size:
                    self._extra = True
                return
            if self.status:
                if pos < size:
                    self._feed_body(parser, view[pos:])
                return
            # A skipped 1xx, or empty lines before a head: the next message starts at pos.

    def _head_end(self, data: bytes | bytearray, pos: int) -> int:
        """Where the head that ``data[pos:]`` continues ends (past its CRLF CRLF), or -1."""
        carry = self._carry
        if carry:  # pos is 0: the CRLF CRLF may have begun in the last read
            found = (carry + bytes(data[:3])).find(b"\r\n\r\n")
            if found >= 0:
                return found + 4 - len(carry)
        found = data.find(b"\r\n\r\n", pos)
        return found + 4 if found >= 0 else -1

    def _check_start(self, data: bytes | bytearray, pos: int) -> None:
        # llhttp also reads "RTSP/" and "ICE/" status lines; h11 read only "HTTP/".
        prefix = self._prefix
        if not prefix:
            while pos < len(data) and data[pos] in _CRLF:  # empty lines between messages, which llhttp skips
                pos += 1
        prefix += data[pos : pos + 5 - len(prefix)]
        if not b"HTTP/".startswith(prefix):
            raise BadResponse("not an HTTP/1.x response")
        self._prefix = bytes(prefix)
        self._at_start = len(prefix) < 5

    def _count_head(self, size: int) -> None:
        self._fed += size
        if self._fed > self._max_head:
            raise BadResponse(f"response head over {self._max_head} bytes")

    def _feed_body(self, parser: httptools.HttpResponseParser, data: bytes | bytearray | memoryview) -> None:
        body = self.body
        before = len(body)
        parser.feed_data(data)
        if len(body) > before or self.complete:
            self._stalled = 0
            return
        # Bytes that carry no body: chunk sizes and trailer fields, which httptools buffers
        # until a field ends. Bounded as a head is.
        self._stalled += len(data)
        if self._stalled > self._max_head:
            raise BadResponse(f"over {self._max_head} bytes of chunk framing without data")

    def _refuse(self, reason: str) -> None:
        self._error = reason
        raise _Stop(reason)

    # -- llhttp callbacks --------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Stop("bytes after the response")

    def on_status(self, text: bytes) -> None:
        self._status_text += text

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked body's trailer fields are not relayed
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps the whitespace that ends a value
        if name in _FRAMING:
            self._framing = True
            if name == b"content-length":
                self._length = value
            elif name == b"transfer-encoding":
                self._codings += 1
                self._chunked_te = value.lower() == b"chunked"
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        version = parser.get_http_version()
        if version not in _VERSIONS:
            self._refuse(f"upstream answered in HTTP/{version}")
        if status < 200:
            if status < 100:
                self._refuse(f"invalid status code {status}")
            if status == 101:
                if not self._upgrade:
                    self._refuse("101 to a request that asked for no upgrade")
                if not parser.should_upgrade():
                    self._refuse("101 without Upgrade and Connection: upgrade")
                self._final(status)
                return
            if self._framing:
                self._refuse(f"a {status} response with a body")
            # Skipped: the next response starts afresh (a 1xx with framing fields was refused above).
            self._fields = []
            self._status_text = b""
            return
        # llhttp refuses a second Content-Length, and Content-Length with Transfer-Encoding; h11 took
        # no coding but one "chunked" (another is read to the close by llhttp), nor does snakeway.
        if self._codings and (self._codings > 1 or not self._chunked_te):
            self._refuse("a Transfer-Encoding other than one chunked")
        self._final(status)
        if self._head_only:
            # Not should_keep_alive(): llhttp, not knowing HEAD, reads a head without a length as
            # a body to the close, which it is not.
            self._keep = version == "1.1" and not has_token(self._fields, b"connection", b"close")
        else:
            self._keep = version == "1.1" and parser.should_keep_alive()
        self._until_close = not self._framing and status not in _NO_BODY and not self._head_only
        if self._head_only:
            self.complete = True
        elif self._length and status not in _NO_BODY:
            self.body_left = int(self._length)  # digits alone: llhttp checked them

    def _final(self, status: int) -> None:
        if _BAD_REASON(self._status_text):
            self._refuse("a control character in the reason phrase")
        self.status = status
        self.reason = self._status_text
        self.headers = self._fields
        self._in_head = False

    def on_body(self, data: bytes) -> None:
        self.body.append(data)
        self.body_left -= len(data)

    def on_message_complete(self) -> None:
        if self.status:
            self.complete = True
        else:  # a skipped 1xx: the next message is checked and counted afresh
            self._fed = 0
            self._at_start = True
            self._prefix = b""

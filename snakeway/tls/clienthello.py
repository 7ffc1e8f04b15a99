"""Peek at a TLS ClientHello before the handshake: server name and ALPN offer.

Theory of operation
-------------------
The standard library's SNI callback runs inside ``do_handshake()`` and sees only the server name, never the ALPN
protocols the client offered. TLS-ALPN-01 (RFC 8737) needs both: a ClientHello that offers ``acme-tls/1`` for a
name with a pending challenge must get the challenge certificate, and every other ClientHello the real one. So the
listener reads the first bytes of a connection itself, decides which :class:`ssl.SSLContext` to use, and then
replays every byte it read into the ``trio.SSLStream`` (a prefixed stream), so OpenSSL sees an untouched
connection.

The parsing is sans-IO, after h11: :class:`ClientHelloParser` takes bytes as they arrive and answers one of

* :class:`ClientHello`: the message is complete; its server name and ALPN list;
* :class:`NeedMore`: what arrived so far is a valid prefix of a ClientHello;
* :class:`NotTLS`: these bytes can never become a ClientHello we accept (plain HTTP on the TLS port, another
  record type, a malformed or oversized message). The reason is for logs only; telling a plain HTTP client
  that the port speaks HTTPS is :mod:`snakeway.tls.sniff`'s job, on the same bytes.

A verdict other than :class:`NeedMore` is final: more bytes never change it, and how the bytes were split between
calls never matters. :func:`parse_client_hello` is the one-shot form. Both are *total*: no input whatsoever
makes them raise (the tests fuzz them).

The wire format (RFC 8446 §5.1, §4.1.2; RFC 5246 §7.4.1.2):

* Records: content type (22 = handshake), version (major 3), 2-byte length (1 to 2^14), fragment. A ClientHello
  may be fragmented across several handshake records (rare from browsers, but clients whose hello exceeds 2^14
  bytes must, and anti-censorship tools split hellos into tiny records on purpose), so fragments are reassembled.
  Nothing else may come between the fragments.
* The handshake message: type 1, 3-byte length, then legacy version, random, session id, cipher suites,
  compression methods and, optionally, extensions. Only ``server_name`` (0, RFC 6066 §3) and
  ``application_layer_protocol_negotiation`` (16, RFC 7301 §3.1) are decoded; the rest is skipped.

Bounds: everything up to the end of the ClientHello must fit in ``max_bytes`` raw bytes (record headers
included); the default, 16 KiB + 512, admits any hello that fits one full record plus a few more. The parser
never buffers more than that. It is incremental, so a client that trickles a hello one byte (or one tiny record)
at a time costs linear, not quadratic, work.

Where this parser is stricter or looser than OpenSSL does not matter for safety: the bytes are replayed, and
OpenSSL makes its own decisions during the real handshake. Our reading only picks the certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias, final

if TYPE_CHECKING:
    import trio

__all__ = [
    "MAX_CLIENT_HELLO_BYTES",
    "ClientHello",
    "ClientHelloParser",
    "NeedMore",
    "NotTLS",
    "Verdict",
    "parse_client_hello",
    "read_client_hello",
]

MAX_CLIENT_HELLO_BYTES: Final = 16 * 1024 + 512

_RECORD_HEADER: Final = 5
_MAX_RECORD: Final = 2**14
_CONTENT_HANDSHAKE: Final = 22
_HANDSHAKE_HEADER: Final = 4
_CLIENT_HELLO: Final = 1
_EXT_SERVER_NAME: Final = 0
_EXT_ALPN: Final = 16
_NAME_TYPE_HOST: Final = 0
_MAX_HOST_NAME: Final = 255  # OpenSSL's TLSEXT_MAXLEN_host_name
_MAX_SESSION_ID: Final = 32


@final
@dataclass(frozen=True)
class ClientHello:
    """What a complete ClientHello asks for.

    Attributes:
        server_name: The SNI host name as sent (ASCII, an A-label for IDNs, case not normalised); ``None`` if the
            client sent no SNI (no extension, or no ``host_name`` entry in it).
        alpn: The ALPN protocols offered, in the client's order; empty if it sent no ALPN extension. Decoded as
            Latin-1, so every byte string has exactly one ``str`` and ``"acme-tls/1"`` matches only itself.
    """

    server_name: str | None
    alpn: tuple[str, ...] = ()


@final
@dataclass(frozen=True)
class NeedMore:
    """The bytes so far are a valid prefix of a ClientHello: read more."""


@final
@dataclass(frozen=True)
class NotTLS:
    """These bytes can never become an acceptable ClientHello.

    Attributes:
        reason: Why, for logs; not a stable interface.
    """

    reason: str


Verdict: TypeAlias = ClientHello | NeedMore | NotTLS

NEED_MORE: Final = NeedMore()


@final
class ClientHelloParser:
    """Incremental ClientHello parser: feed bytes as they arrive, get a verdict each time.

    Args:
        max_bytes: Raw bytes (record headers included) the ClientHello must end within; a hello that would end
            later is :class:`NotTLS`. Bytes beyond it are ignored, never buffered.
    """

    def __init__(self, *, max_bytes: int = MAX_CLIENT_HELLO_BYTES) -> None:
        self._max = max_bytes
        self._buffer = bytearray()  # raw bytes, at most max_bytes of them
        self._record = 0  # offset of the next unconsumed record header in _buffer
        self._message = bytearray()  # handshake bytes of the complete records so far
        self._verdict: ClientHello | NotTLS | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> Verdict:
        """Add ``data`` (possibly empty) and return the verdict on everything fed so far.

        Never raises. Once the verdict is :class:`ClientHello` or :class:`NotTLS` it stays so.
        """
        if self._verdict is not None:
            return self._verdict
        room = max(self._max - len(self._buffer), 0)
        self._buffer += data[:room]
        verdict = self._advance()
        if verdict is None and len(self._buffer) >= self._max:
            verdict = NotTLS(f"no complete ClientHello within {self._max} bytes")
        if verdict is None:
            return NEED_MORE
        self._verdict = verdict
        self._buffer = bytearray()
        self._message = bytearray()
        return verdict

    def _advance(self) -> ClientHello | NotTLS | None:
        """Consume every complete record in the buffer; ``None`` means the hello is still incomplete."""
        while True:
            start = self._record
            header = bytes(self._buffer[start : start + _RECORD_HEADER])
            problem = _check_record_header(header)
            if problem is not None:
                return NotTLS(problem)
            if len(header) < _RECORD_HEADER:
                return None
            fragment_start = start + _RECORD_HEADER
            end = fragment_start + int.from_bytes(header[3:5], "big")
            if end > len(self._buffer):
                # Incomplete record: still look at the handshake header, so that garbage fails early.
                missing = _HANDSHAKE_HEADER - len(self._message)
                if missing > 0:
                    head = bytes(self._message) + bytes(self._buffer[fragment_start : fragment_start + missing])
                    return _check_message_header(head, self._max)
                return None
            self._message += self._buffer[fragment_start:end]
            self._record = end
            problem_verdict = _check_message_header(bytes(self._message[:_HANDSHAKE_HEADER]), self._max)
            if problem_verdict is not None:
                return problem_verdict
            if len(self._message) >= _HANDSHAKE_HEADER:
                total = _HANDSHAKE_HEADER + int.from_bytes(self._message[1:4], "big")
                if len(self._message) >= total:
                    return _parse_body(bytes(self._message[_HANDSHAKE_HEADER:total]))


def parse_client_hello(data: bytes | bytearray | memoryview, *, max_bytes: int = MAX_CLIENT_HELLO_BYTES) -> Verdict:
    """The verdict on the first bytes a client sent; total (never raises).

    Args:
        data: Everything received so far on the connection. Bytes after the ClientHello are ignored.
        max_bytes: See :class:`ClientHelloParser`.

    Returns:
        :class:`ClientHello`, :class:`NeedMore` or :class:`NotTLS`.
    """
    return ClientHelloParser(max_bytes=max_bytes).feed(data)


async def read_client_hello(
    stream: trio.abc.ReceiveStream, *, max_bytes: int = MAX_CLIENT_HELLO_BYTES
) -> tuple[bytes, ClientHello | NotTLS | None]:
    """Read from ``stream`` until the first bytes are a ClientHello or cannot be one.

    Reads stop at the verdict, and never ask for more than ``max_bytes`` in total, so at most ``max_bytes`` are
    read from a well-behaved stream.

    Args:
        stream: The raw (not yet TLS) connection.
        max_bytes: See :class:`ClientHelloParser`.

    Returns:
        ``(received, verdict)``: every byte read, to be replayed into the TLS stream (or the plain-text handler),
        and the verdict; ``None`` if the peer closed the stream (EOF) before a verdict.

    Resource handling:
        The stream is neither closed nor wrapped; the caller owns it and the returned bytes.

    Error handling:
        Stream errors (``trio.BrokenResourceError``, ``trio.ClosedResourceError``) propagate. There is no timeout
        here: a client may trickle its hello for ever, so the caller wraps this call in ``trio.fail_after``.
    """
    parser = ClientHelloParser(max_bytes=max_bytes)
    received = bytearray()
    verdict = parser.feed(b"")
    while isinstance(verdict, NeedMore):
        # NeedMore implies fewer than max_bytes were fed, so the request is at least one byte.
        chunk = await stream.receive_some(max_bytes - len(received))
        if not chunk:
            return bytes(received), None
        received += chunk
        verdict = parser.feed(chunk)
    return bytes(received), verdict


def _check_record_header(header: bytes) -> str | None:
    """Why a (possibly partial) record header cannot carry a ClientHello fragment, or ``None``."""
    if len(header) >= 1 and header[0] != _CONTENT_HANDSHAKE:
        return f"record content type {header[0]} is not handshake ({_CONTENT_HANDSHAKE})"
    if len(header) >= 2 and header[1] != 3:
        return f"record version major {header[1]} is not 3"
    if len(header) >= _RECORD_HEADER:
        length = int.from_bytes(header[3:5], "big")
        if length == 0:
            return "empty handshake record"
        if length > _MAX_RECORD:
            return f"record length {length} exceeds 2^14"
    return None


def _check_message_header(head: bytes, max_bytes: int) -> NotTLS | None:
    """Why a (possibly partial) handshake header cannot start an acceptable ClientHello, or ``None``."""
    if len(head) >= 1 and head[0] != _CLIENT_HELLO:
        return NotTLS(f"handshake message type {head[0]} is not ClientHello ({_CLIENT_HELLO})")
    if len(head) >= _HANDSHAKE_HEADER:
        length = int.from_bytes(head[1:4], "big")
        # At least one record header precedes the message, so this is a lower bound of the raw size.
        if _RECORD_HEADER + _HANDSHAKE_HEADER + length > max_bytes:
            return NotTLS(f"ClientHello of {length} bytes exceeds the {max_bytes}-byte limit")
    return None


class _Malformed(Exception):
    """Raised by :class:`_Cursor`; never escapes :func:`_parse_body`."""


@final
class _Cursor:
    """Reads TLS presentation-language fields from a byte string, raising :class:`_Malformed` on short data."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise _Malformed(f"truncated {what}")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, length_size: int, what: str, *, minimum: int = 0, maximum: int | None = None) -> bytes:
        """A ``<minimum..maximum>`` vector whose length prefix has ``length_size`` bytes."""
        length = self.uint(length_size, f"{what} length")
        if length < minimum or (maximum is not None and length > maximum):
            raise _Malformed(f"{what} length {length} out of range")
        return self.take(length, what)


def _parse_body(body: bytes) -> ClientHello | NotTLS:
    try:
        return _client_hello(_Cursor(body))
    except _Malformed as exc:
        return NotTLS(f"malformed ClientHello: {exc}")


def _client_hello(body: _Cursor) -> ClientHello:
    body.take(2 + 32, "version and random")
    body.vector(1, "session id", maximum=_MAX_SESSION_ID)
    suites = body.vector(2, "cipher suites", minimum=2)
    if len(suites) % 2:
        raise _Malformed("odd cipher suites length")
    body.vector(1, "compression methods", minimum=1)
    if body.remaining() == 0:  # a hello without extensions (TLS 1.0 allows it)
        return ClientHello(server_name=None)
    extensions = _Cursor(body.vector(2, "extensions"))
    if body.remaining():
        raise _Malformed("bytes after the extensions")
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    seen: set[int] = set()
    while extensions.remaining():
        ext_type = extensions.uint(2, "extension type")
        data = _Cursor(extensions.vector(2, f"extension {ext_type}"))
        if ext_type in seen:
            raise _Malformed(f"duplicate extension {ext_type}")
        seen.add(ext_type)
        if ext_type == _EXT_SERVER_NAME:
            server_name = _server_name(data)
        elif ext_type == _EXT_ALPN:
            alpn = _alpn(data)
    return ClientHello(server_name=server_name, alpn=alpn)


def _server_name(data: _Cursor) -> str | None:
    """RFC 6066 §3: ``ServerName server_name_list<1..2^16-1>``; at most one ``host_name`` entry."""
    entries = _Cursor(data.vector(2, "server name list", minimum=1))
    if data.remaining():
        raise _Malformed("bytes after the server name list")
    host_name: str | None = None
    while entries.remaining():
        name_type = entries.uint(1, "server name type")
        name = entries.vector(2, "server name", minimum=1)
        if name_type != _NAME_TYPE_HOST:
            continue  # no other type is defined; skip it like an unknown extension
        if host_name is not None:
            raise _Malformed("two host names")
        # OpenSSL refuses longer names and embedded NULs; the stdlib SNI callback refuses non-ASCII ones.
        if len(name) > _MAX_HOST_NAME or b"\x00" in name or not name.isascii():
            raise _Malformed("invalid host name")
        host_name = name.decode("ascii")
    return host_name


def _alpn(data: _Cursor) -> tuple[str, ...]:
    """RFC 7301 §3.1: ``ProtocolName protocol_name_list<2..2^16-1>``, names ``<1..2^8-1>``."""
    names = _Cursor(data.vector(2, "ALPN list", minimum=2))
    if data.remaining():
        raise _Malformed("bytes after the ALPN list")
    protocols: list[str] = []
    while names.remaining():
        protocols.append(names.vector(1, "ALPN protocol", minimum=1).decode("latin-1"))
    return tuple(protocols)

"""An h11 connection glued to a trio stream, after h11's own trio example: the client hop.

h11 decides; this module does the I/O. Reads are bounded by ``max_read`` and
by h11's ``max_incomplete_event_size``; a failed write tells the state
machine (``send_failed``) before the error propagates.

A relayed response body goes to the client as bytes, not as one h11 ``Data``
event per read (:meth:`H11Stream.encode_body`): the bytes are framed as h11's
writer would frame them and counted against its Content-Length, so the state
machine still ends ``DONE`` (or refuses a body longer than the length). That
reads h11's private writer: the h11 versions snakeway accepts are pinned in
``pyproject.toml``.

A long enough body of known length may instead move from the upstream's
socket to a plain-TCP client's without passing through Python
(:meth:`H11Stream.send_spliced`); it is counted against the Content-Length
the same way.

Writes are not timed here: a client's send timeout (nginx's ``send_timeout``)
belongs to its transport, :class:`snakeway.tcp.TcpStream`, which times the
progress of a write rather than the whole of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus

import h11
import trio
from h11._writers import ChunkedWriter, ContentLengthWriter, Http10Writer

from snakeway.pipe import Pipe
from snakeway.proxy.deadlines import Deadlines
from snakeway.proxy.headers import get_header, has_token
from snakeway.proxy.upstream_wire import UpstreamRequest
from snakeway.proxy.validators import http_date
from snakeway.tcp import TcpStream
from snakeway.tls import leanssl

# Largest read: what a body relay moves per round. 128 KiB relays 1 MiB bodies about 45 % faster than 64 KiB
# (fewer rounds through h11 and trio per byte) and costs nothing while a connection is idle; it bounds what
# a connection holds in flight toward a slow client.
READ_SIZE = 128 * 1024

Headers = Sequence[tuple[bytes, bytes]]


class _DateCache:
    second = -1
    value = b""


def current_date() -> bytes:
    """The ``Date`` of a response snakeway writes (RFC 9110 section 6.6.1): formatted once a second."""
    second = int(time.time())
    if second != _DateCache.second:
        _DateCache.second, _DateCache.value = second, http_date(second)
    return _DateCache.value


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def relayed_request(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], *, chunked: bool = False
) -> UpstreamRequest:
    """The request for the upstream, from a request h11 parsed; ``chunked``: its body is re-framed as chunks.

    Every part came out of h11's parser, which checked it against the
    grammar and its framing (:mod:`snakeway.proxy.strict` refuses both
    Content-Length and Transfer-Encoding), or is a header snakeway writes
    itself from checked values (a host name, an IP address, ``Via``). So it
    is written upstream as it is, without another check.
    """
    return UpstreamRequest(method, target, headers, chunked)


def relayed_response(status: int, headers: list[tuple[bytes, bytes]], reason: bytes) -> h11.Response:
    """The response for the client, from an upstream response llhttp parsed.

    llhttp checked the header names and values against the grammar (and
    :mod:`snakeway.proxy.upstream_wire` what it lets through), so the
    per-header regular expressions that building an event runs are skipped,
    with the flag h11 uses for the events of its own parser: about 5 % of a
    proxied request's CPU time. Framing (Content-Length) is still checked.
    """
    return h11.Response(status_code=status, headers=headers, reason=reason, _parsed=True)


def keep_http10_alive(conn: h11.Connection, request: h11.Request) -> bool:
    """Keep the connection after an HTTP/1.0 ``request`` that asks for it; returns whether it does.

    h11 takes every HTTP/1.0 request for its connection's last: reading one
    clears the state machine's ``keep_alive`` flag, so the exchange ends in
    MUST_CLOSE. With ``Connection: keep-alive`` (and no ``close``) the flag is
    set again, as if the request were HTTP/1.1. The rest of h11 already deals
    with HTTP/1.0 keep-alive: a response of unknown length (which an HTTP/1.0
    client knows the end of only by the close, having no chunked coding) still
    gets ``Connection: close`` and ends the connection, and so does one that
    says ``close``. An HTTP/1.0 request body always has a Content-Length
    (:mod:`snakeway.proxy.strict` refuses Transfer-Encoding in HTTP/1.0), so
    the next request starts where it ends. The flag is h11's private state:
    the h11 versions snakeway accepts are pinned in ``pyproject.toml``.
    """
    if not has_token(request.headers, b"connection", b"keep-alive") or has_token(
        request.headers, b"connection", b"close"
    ):
        return False
    conn._cstate.keep_alive = True
    return True


def announce_keep_alive(response: h11.Response) -> h11.Response:
    """``response`` with ``Connection: keep-alive``, which an HTTP/1.0 client needs to hear.

    A response that names its own ``Connection`` is left as it is; h11 turns
    ``keep-alive`` into ``close`` on a response that must end the connection.
    """
    if get_header(response.headers, b"connection") is not None:
        return response
    return h11.Response(
        status_code=response.status_code,
        headers=[*response.headers, (b"connection", b"keep-alive")],
        reason=response.reason,
        _parsed=True,
    )


class H11Stream:
    """One side of an HTTP/1.1 conversation over a trio stream.

    Args:
      stream: the transport; owned by the caller, who closes it.
      conn: an ``h11.Connection`` for our role (SERVER downstream, CLIENT upstream).
    """

    def __init__(self, stream: trio.abc.Stream, conn: h11.Connection) -> None:
        self.stream = stream
        self.conn = conn
        # A quickened trio.SSLStream: read and written through snakeway.tls.leanssl's shorter paths.
        self._lean_tls = leanssl.is_lean(stream)
        # The TCP stream under ``stream`` (itself, or under TLS) where the owner set it: a client's
        # (Http1Connection), for the forwarder's TcpStream.on_send_blocked.
        self.tcp: TcpStream | None = None
        # The deadline of the connection ``stream`` serves (server role), set by its Http1Connection: what
        # times the forwarder's waits. None outside a connection: the forwarder's waits then time themselves.
        self.deadlines: Deadlines | None = None
        # Method of the request in flight (server role): a HEAD gets no body.
        self.request_method = b""
        # The request in flight is HTTP/1.0 and the connection is kept (keep_http10_alive).
        self.http10_keep_alive = False
        # Headers every response of ours carries (server role): the listener's Strict-Transport-Security.
        self.own_headers: Headers = ()
        # For the access log (server role): bytes written for the response in flight, and what answered it
        # (an upstream's host:port, or a word of snakeway.proxy.accesslog); the connection resets both.
        self.sent = 0
        self.served_by = "-"

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        """The next event, reading from the stream as h11 needs.

        Raises:
          h11.RemoteProtocolError: the peer broke the protocol.
          trio.BrokenResourceError: the transport failed.
        """
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.receive())  # type: ignore[arg-type]  # h11 takes a bytearray
                continue
            if type(event) is h11.Request:
                self.request_method = event.method
            return event  # type: ignore[return-value]  # mypy does not narrow h11 sentinels by `is`

    async def send(self, *events: h11.Event) -> None:
        """Send events, coalesced into a single write.

        Raises:
          trio.BrokenResourceError: the transport failed (a client's
            :class:`~snakeway.tcp.SendTimeout` among others); h11's state is ``ERROR``.
        """
        await self.send_raw(self.encode(events))

    def encode(self, events: Iterable[h11.Event]) -> bytes:
        if self.http10_keep_alive:
            events = [announce_keep_alive(e) if type(e) is h11.Response else e for e in events]
        chunks = []
        for event in events:
            data = self.conn.send(event)
            if data:
                chunks.append(data)
        return b"".join(chunks)

    def encode_body(self, chunks: list[bytes], out: list[bytes]) -> None:
        """Append the response body ``chunks`` to ``out`` as h11 would write them as ``Data`` events.

        Without an event per chunk: the bytes are framed as the writer of the
        response in flight frames them, and counted against its
        Content-Length, so that the state machine ends as if each had been
        sent. Private h11 state (see the module docstring).

        Raises:
          h11.LocalProtocolError: more bytes than the response's Content-Length (h11's state is ``ERROR``).
        """
        conn = self.conn
        writer = conn._writer
        kind = type(writer)
        if kind is ContentLengthWriter:
            left = writer._length - sum(map(len, chunks))  # type: ignore[union-attr]  # the writer's type is known
            if left < 0:
                conn.send_failed()
                raise h11.LocalProtocolError("Too much data for declared Content-Length")
            writer._length = left  # type: ignore[union-attr]
            out += chunks
        elif kind is ChunkedWriter:
            for chunk in chunks:
                if chunk:  # an empty chunk would end the body
                    out += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        elif kind is Http10Writer:
            out += chunks
        else:  # not sending a body: let h11 say why
            for chunk in chunks:
                out.append(conn.send(h11.Data(data=chunk)) or b"")

    def length_left(self) -> int | None:
        """Bytes of the response in flight's Content-Length still to send; None if its body is framed otherwise."""
        writer = self.conn._writer
        return writer._length if type(writer) is ContentLengthWriter else None

    async def send_spliced(
        self, source: TcpStream, pipe: Pipe, count: int, before_read_wait: Callable[[], None]
    ) -> int:
        """Send the next ``count`` bytes of the response body straight from ``source`` (:meth:`TcpStream.send_spliced`);
        returns how many were sent, fewer only when ``source`` ended sooner.

        The transport must be a :class:`~snakeway.tcp.TcpStream` and the
        response's body framed by a Content-Length with at least ``count``
        bytes to go (:meth:`length_left`): the bytes sent are counted against
        it as :meth:`encode_body` counts them.

        Raises:
          As :meth:`TcpStream.send_spliced`; h11's state is then ``ERROR``.
        """
        writer = self.conn._writer
        assert type(writer) is ContentLengthWriter and writer._length >= count, "not a body of that length"
        stream = self.stream
        assert type(stream) is TcpStream
        self.sent += count  # counted before the write, as send_raw counts
        try:
            sent = await stream.send_spliced(source, pipe, count, before_read_wait)
        except BaseException:
            self.conn.send_failed()
            raise
        writer._length -= sent
        self.sent -= count - sent
        return sent

    async def receive(self) -> bytes | bytearray:
        """``stream.receive_some(READ_SIZE)``, by the shorter path under TLS (see :mod:`snakeway.tls.leanssl`)."""
        if self._lean_tls:
            return await leanssl.receive(self.stream, READ_SIZE)  # type: ignore[arg-type]  # is_lean checked it
        return await self.stream.receive_some(READ_SIZE)

    async def send_raw(self, data: bytes) -> None:
        if not data:
            return
        self.sent += len(data)
        try:
            if self._lean_tls:
                await leanssl.send_all(self.stream, data)  # type: ignore[arg-type]  # is_lean checked it
            else:
                await self.stream.send_all(data)
        except BaseException:
            self.conn.send_failed()
            raise

    async def send_response(
        self, status: int, headers: Headers, body: bytes = b"", *, reason: bytes = b""
    ) -> None:
        """A whole response in one write, with ``Date`` and :attr:`own_headers`; the body is dropped for HEAD,
        204 and 304."""
        reason = reason or reason_phrase(status)
        events: list[h11.Event] = [
            h11.Response(
                status_code=status, headers=[*headers, (b"date", current_date()), *self.own_headers], reason=reason
            )
        ]
        if body and self.request_method != b"HEAD" and status not in (204, 304):
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        await self.send(*events)

"""One exchange between a client and an upstream connection: the request sent, the response relayed.

:func:`snakeway.proxy.forward.forward` picks the upstream and retries; an
:class:`Exchange` moves the bytes of one attempt, each wait under a timeout
of its own (see the class docstring for how they share the client connection's
one cancel scope).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import h11
import trio

from snakeway.config.model import UpstreamSettings
from snakeway.proxy import headers as hdr
from snakeway.proxy.balance import Health
from snakeway.proxy.deadlines import Deadlines
from snakeway.proxy.deadlines import Wait as Wait  # re-exported: what the exchange's waits are
from snakeway.proxy.errors import ClientGone, RequestFailed
from snakeway.proxy.h11io import READ_SIZE, H11Stream, relayed_response
from snakeway.proxy.pool import UpstreamConnection, UpstreamPool
from snakeway.proxy.request_body import CONTINUE, ReadBody
from snakeway.proxy.splice import SPLICE_MIN_BYTES, splice_count
from snakeway.proxy.upstream_wire import BadResponse, UpstreamRequest
from snakeway.tcp import SpliceSourceError, TcpStream

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForwardContext:
    """What forwarding needs beyond the request: shared per listener."""

    pool: UpstreamPool
    health: Health
    settings: UpstreamSettings
    client_ip: str
    scheme: str
    body_timeout: float  # between two reads of the request body
    buffer_body: int  # a body known to fit in this many bytes is read before connecting
    via: bool = True                                   # server.via
    own_headers: tuple[tuple[bytes, bytes], ...] = ()  # the listener's (Strict-Transport-Security)



class StaleConnection(RequestFailed):
    """A reused connection died before any response byte: safe to retry.

    Where no retry is made, it is the 502 it derives from.
    """

    def __init__(self) -> None:
        super().__init__(502, "the upstream closed a kept-alive connection")


class Exchange:
    """One request and its response between a client and an upstream connection.

    Timeouts: every wait (a read or a write on either hop) has a time limit of
    its own, as if each ran under its own ``trio.fail_after``. None has a
    scope of its own: each wait first re-arms the deadline of the client
    connection's one scope (:meth:`_arm`, on ``down.deadlines``, see
    :mod:`snakeway.proxy.deadlines`) and names the :class:`Wait` whose error
    is owed should that deadline pass. The deadline passing cancels the
    connection's scope: the exchange is abandoned where it is, and the
    connection answers for the wait (504, 408, or a close once the response
    began). Outside a connection (``down.deadlines`` is None: a caller of its
    own) :meth:`run` makes a scope for the exchange, as :meth:`timeouts` does
    for a stretch of it, and the error is raised here.

    Every wait of the exchange must be armed, but for the writes to the
    client: the client's transport times those by their progress
    (:class:`snakeway.tcp.TcpStream`'s send timeout). A write to the client
    runs under the deadline the last wait left, which must not cut it short
    when the client reads slowly but steadily: the transport lifts it
    (:meth:`_lift_deadline`, its ``on_send_blocked``) once the write has to
    wait for the client. The hook is set around the exchange's own writes to
    the client (:meth:`to_client`) and only there: under TLS the transport
    also writes while the request body is read (an alert, a key update), and
    a wait of such a write must not lift the body read's deadline. A write
    that does not wait, nearly all of them, costs nothing more. A spliced body
    (:meth:`_splice`) keeps both rules: each wait for the upstream is armed,
    each wait for the client lifts the deadline through the same hook.
    """

    def __init__(
        self, down: H11Stream, conn: UpstreamConnection, ctx: ForwardContext, limit: int | None
    ) -> None:
        self.down = down
        self.conn = conn
        self.wire = conn.wire
        self.ctx = ctx
        self.limit = limit
        self.response_started = False
        # The deadline the waits arm: the client connection's, or this exchange's own inside timeouts().
        self._deadlines = down.deadlines
        # The scope a blocked write to the client lifts the deadline of (None: no deadline to lift).
        self._scope = None if down.deadlines is None else down.deadlines.scope

    async def run(self, up_request: UpstreamRequest, body: ReadBody | None = None) -> int:
        """Send the request, then relay the response; returns the status.

        ``body`` is what was read of the request body already: when complete,
        it is sent with the head and nothing more is read from the client.
        """
        if self._deadlines is None:  # not under a client connection's deadline: time the exchange here
            with self.timeouts():
                return await self.run(up_request, body)
        if body is not None and body.complete:
            await self.to_upstream(self._request_bytes(up_request, body))
        else:
            await self.send_request(up_request, body)
        status, last = await self._relay()
        await self.to_client(last)
        return status

    # -- timeouts --------------------------------------------------------

    @contextmanager
    def timeouts(self) -> Iterator[None]:
        """Run a stretch of the exchange whose waits are timed by a scope of its own.

        For a caller that is no client connection's request, and for the
        WebSocket handshake (its tunnel must not be timed by the waits before).

        Raises:
          RequestFailed, ClientGone: a wait ran out of time (which one depends on the wait).
        """
        outer = self._deadlines
        scope = trio.CancelScope()
        deadlines = self._deadlines = Deadlines(scope)
        self._scope = scope
        try:
            with scope:
                yield
        finally:
            self._deadlines = outer
            self._scope = None if outer is None else outer.scope
        if scope.cancelled_caught:
            raise self._timeout_error(deadlines.waiting)

    def _arm(self, wait: Wait, seconds: float) -> None:
        """Give the wait about to start ``seconds`` from now."""
        deadlines = self._deadlines
        assert deadlines is not None, "a wait outside Exchange.timeouts()"
        deadlines.arm(wait, seconds)

    def _lift_deadline(self) -> None:
        """A write of :meth:`to_client` waits for the client: no deadline of the exchange's applies.

        The client's transport times the wait by its progress (a ``SendTimeout``
        is a ``BrokenResourceError``). The deadline the last wait left is lifted,
        unless it passed already (its error stands); the next wait arms one again.
        """
        deadlines = self._deadlines
        if deadlines is not None:
            deadlines.lift()

    def _timeout_error(self, wait: Wait) -> Exception:
        """What the exchange raises when ``wait`` ran out of time under :meth:`timeouts`."""
        if wait is Wait.UPSTREAM_READ:
            return self._upstream_failed(wait.reason, status=wait.status)
        return RequestFailed(wait.status, wait.reason)

    # -- request ---------------------------------------------------------

    async def send_request(self, up_request: UpstreamRequest, body: ReadBody | None = None) -> None:
        """Send the request, its body relayed as it arrives after what ``body`` holds of it."""
        wire = self.wire
        out = self._request_bytes(up_request, body)
        received = body.size if body is not None else 0
        first = True
        if self.down.conn.they_are_waiting_for_100_continue:
            await self.to_client(self.down.encode((CONTINUE,)))
        while True:
            event = self.down.conn.next_event()
            if event is h11.NEED_DATA:
                await self.to_upstream(out, first)
                out = []
                first = False
                await self._read_client()
                continue
            if type(event) is h11.Data:
                received += len(event.data)
                if self.limit is not None and received > self.limit:
                    raise RequestFailed(413, f"request body over the limit of {self.limit} bytes")
                out.append(wire.request_body(event.data))
            elif type(event) is h11.EndOfMessage:
                # Request trailers are dropped, as nginx does: a trailer could
                # carry framing or routing fields the head was checked for.
                out.append(wire.end_request())
                await self.to_upstream(out, first)
                return
            elif type(event) is h11.ConnectionClosed:
                raise ClientGone("client closed the connection mid-body")
            else:  # PAUSED and the like cannot happen while a body is open
                raise ClientGone(f"unexpected event {event!r}")

    def _request_bytes(self, up_request: UpstreamRequest, body: ReadBody | None) -> list[bytes]:
        """The request's head and what ``body`` holds of its body, ended when ``body`` is complete."""
        wire = self.wire
        out = [wire.start_request(up_request)]
        if body is not None:
            out += [wire.request_body(e.data) for e in body.events if type(e) is h11.Data]
            if body.complete:
                out.append(wire.end_request())
        return out

    async def _read_client(self) -> None:
        self._arm(Wait.CLIENT_READ, self.ctx.body_timeout)
        try:
            data = await self.down.receive()
        except trio.BrokenResourceError as exc:
            raise ClientGone(str(exc)) from exc
        try:
            self.down.conn.receive_data(data)  # type: ignore[arg-type]  # h11 takes a bytearray too
        except RuntimeError as exc:
            raise ClientGone(str(exc)) from exc

    async def to_upstream(self, out: list[bytes], first: bool = True) -> None:
        """Write ``out`` to the upstream; ``first``: the write holds the request head."""
        data = b"".join(out)
        if not data:
            return
        self._arm(Wait.UPSTREAM_WRITE, self.ctx.settings.read_timeout_seconds)
        try:
            await self.conn.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if self.conn.reused and first:
                raise StaleConnection() from exc
            raise RequestFailed(502, f"upstream connection failed: {exc}") from exc

    # -- response --------------------------------------------------------

    async def read_head(self) -> int:
        """Read until the upstream's final response head, or a 101's, is in; returns its status."""
        wire = self.wire
        while not wire.status:
            await self._read_upstream(0)
        return wire.status

    async def relay_response(self) -> int:
        """Relay the upstream's response (its head may have been read already)."""
        status, last = await self._relay()
        await self.to_client(last)
        return status

    async def _relay(self) -> tuple[int, bytes]:
        """Relay the upstream's response but for its last write: (the status, that write's bytes).

        The head goes through the client's h11 connection (which picks the
        framing the client gets), the body as bytes (``H11Stream.encode_body``).
        """
        wire = self.wire
        down = self.down
        status = 0
        out: list[bytes] = []
        while True:
            try:
                if not status and wire.status:
                    status = wire.status
                    relayed = hdr.relayed_response_headers(wire.headers, via=self.ctx.via, own=self.ctx.own_headers)
                    if relayed is None:  # the wire refuses it first; kept as the rule's one authority
                        raise self._upstream_failed("upstream response has both Content-Length and Transfer-Encoding")
                    # From here on h11's state holds the response: a failure can only close the connection.
                    self.response_started = True
                    out.append(down.encode((relayed_response(status, relayed, wire.reason),)))
                if wire.body:
                    down.encode_body(wire.take_body(), out)
                if wire.complete:
                    out.append(down.conn.send(_END) or b"")
                    return status, b"".join(out)
            except h11.LocalProtocolError as exc:  # the upstream's framing does not hold up
                logger.warning("response from %s cannot be relayed: %s", self.conn.endpoint, exc)
                raise ClientGone(f"invalid upstream response: {exc}") from exc
            if out:
                await self.to_client(b"".join(out))
                out = []
            if wire.body_left >= SPLICE_MIN_BYTES:  # cheap first: most bodies end before here
                count = splice_count(
                    wire.body_left,
                    down.length_left(),
                    plain_client=down.tcp is down.stream,
                    tcp_upstream=type(self.conn.stream) is TcpStream,
                )
                if count:
                    await self._splice(count)
                    continue
            await self._read_upstream(status)

    async def _read_upstream(self, status: int) -> None:
        self._arm(Wait.UPSTREAM_READ, self.ctx.settings.read_timeout_seconds)
        try:
            data = await self.conn.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, OSError) as exc:
            if not status and self.conn.reused:
                raise StaleConnection() from exc
            raise self._upstream_failed(f"upstream connection failed: {exc}") from exc
        try:
            if data:
                self.wire.feed(data)
            elif not status and self.conn.reused:
                raise StaleConnection()
            else:
                self.wire.feed_eof()
        except BadResponse as exc:
            raise self._upstream_failed(f"upstream sent an invalid response: {exc}") from exc

    async def _splice(self, count: int) -> None:
        """Move the body's last ``count`` bytes from the upstream's socket to the client's (see
        :mod:`snakeway.proxy.splice`); each wait is timed as a read or a write of the byte path."""
        conn = self.conn
        tcp = self.down.tcp
        source = conn.stream
        assert tcp is not None and type(source) is TcpStream  # as splice_count() was told
        if self._scope is not None:  # as to_client(): the client's transport times the waits for the client
            tcp.on_send_blocked = self._lift_deadline
        try:
            sent = await self.down.send_spliced(source, conn.pipe, count, self._arm_upstream_read)
        except SpliceSourceError as exc:
            raise self._upstream_failed(f"upstream connection failed: {exc}") from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientGone(str(exc)) from exc
        finally:
            tcp.on_send_blocked = None
        # Anything already readable past the body (bytes, or the close) keeps the connection from reuse.
        poll = conn.readable_poll
        self.wire.body_moved(sent, followed=sent == count and poll is not None and poll())
        if sent < count:  # the upstream closed first: the wire says what that makes of the response
            try:
                self.wire.feed_eof()
            except BadResponse as exc:
                raise self._upstream_failed(f"upstream sent an invalid response: {exc}") from exc

    def _arm_upstream_read(self) -> None:
        self._arm(Wait.UPSTREAM_READ, self.ctx.settings.read_timeout_seconds)

    def _upstream_failed(self, reason: str, *, status: int = 502) -> Exception:
        if self.response_started:
            return ClientGone(f"{reason} after the response began")
        return RequestFailed(status, reason)

    async def to_client(self, data: bytes) -> None:
        """Write to the client: not armed, the client's transport times it (see :class:`Exchange`)."""
        if not data:
            return
        # The hook that lifts the exchange's deadline is set for this write only: the client's
        # transport also writes on its own account (TLS records while the request body is read),
        # and such a write must leave the body read's deadline alone. The last write, made after
        # the scope, has no deadline to lift and sets nothing.
        tcp = self.down.tcp if self._scope is not None else None
        if tcp is not None:
            tcp.on_send_blocked = self._lift_deadline
        try:
            await self.down.send_raw(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientGone(str(exc)) from exc
        finally:
            if tcp is not None:
                tcp.on_send_blocked = None


_END = h11.EndOfMessage()

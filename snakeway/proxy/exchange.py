"""One exchange between a client and an upstream connection: the request sent, the response relayed.

:func:`snakeway.proxy.forward.forward` picks the upstream and retries; an
:class:`Exchange` moves the bytes of one attempt, each wait under a timeout
of its own (see the class docstring for how they share one cancel scope).
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import h11
import trio

from snakeway.config.model import UpstreamSettings
from snakeway.proxy import headers as hdr
from snakeway.proxy.balance import Health
from snakeway.proxy.errors import ClientGone, RequestFailed
from snakeway.proxy.h11io import READ_SIZE, H11Stream, relayed_response
from snakeway.proxy.pool import UpstreamConnection, UpstreamPool
from snakeway.proxy.request_body import CONTINUE, ReadBody
from snakeway.proxy.upstream_wire import BadResponse, UpstreamRequest

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


# A wait whose deadline is within this of the one already set keeps that one (nginx's
# NGX_TIMER_LAZY_DELAY, 300 ms, for the same reason): moving a deadline is the costliest part
# of arming a wait, and consecutive waits of one exchange mostly have the same timeout. The kept
# deadline may be the earlier one, so short timeouts get a slack of a tenth of themselves at most.
LAZY_DEADLINE_SECONDS = 0.3
LAZY_DEADLINE_SHARE = 0.1


class Wait(enum.Enum):
    """What an exchange waits for; each has its own timeout and error."""

    CLIENT_READ = enum.auto()  # the request body: the client's body timeout, 408
    UPSTREAM_WRITE = enum.auto()  # the upstream taking the request: read timeout, 504
    UPSTREAM_READ = enum.auto()  # the response: read timeout, 504 (close once it began)


class Exchange:
    """One request and its response between a client and an upstream connection.

    Timeouts: every wait (a read or a write on either hop) has a time limit of
    its own, as if each ran under its own ``trio.fail_after``. But a
    ``fail_after`` costs about three times as much as moving the deadline of a
    scope already entered (some 70 000 CPU instructions against 20 000; a
    small proxied request takes 1.5 million), and even a small exchange waits
    three times. So the waits of an exchange share one scope, opened by
    :meth:`timeouts`, and each wait first re-arms it (:meth:`_arm`) with its
    own deadline and the :class:`Wait` that names the error should that
    deadline pass. Every wait inside :meth:`timeouts` must be armed, but for
    the writes to the client: the client's transport times those by their
    progress (:class:`snakeway.tcp.TcpStream`'s send timeout). A write to the
    client runs under the deadline the last wait left, which must not cut it
    short when the client reads slowly but steadily: the transport lifts it
    (:meth:`_lift_deadline`, its ``on_send_blocked``) once the write has to
    wait for the client. The hook is set around the exchange's own writes to
    the client (:meth:`to_client`) and only there: under TLS the transport
    also writes while the request body is read (an alert, a key update), and
    a wait of such a write must not lift the body read's deadline. A write
    that does not wait, nearly all of them, costs nothing more; and the last
    write of a response (all of a small one) is made after the scope, by
    :meth:`run`, with no hook to set.
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
        self._scope: trio.CancelScope | None = None
        self._waiting = Wait.UPSTREAM_WRITE

    async def run(self, up_request: UpstreamRequest, body: ReadBody | None = None) -> int:
        """Send the request, then relay the response; returns the status.

        ``body`` is what was read of the request body already: when complete,
        it is sent with the head and nothing more is read from the client.
        """
        # What timeouts() does, written out: on the path every request takes, a generator-based
        # context manager costs more than the scope it manages.
        scope = self._scope = trio.CancelScope()
        try:
            with scope:
                if body is not None and body.complete:
                    await self.to_upstream(self._request_bytes(up_request, body))
                else:
                    await self.send_request(up_request, body)
                status, last = await self._relay()
        finally:
            self._scope = None
        if scope.cancelled_caught:
            raise self._timeout_error()
        # The response's last write (all of a small one), once the exchange's deadline is gone;
        # the client's transport times it, as every client write.
        await self.to_client(last)
        return status

    # -- timeouts --------------------------------------------------------

    @contextmanager
    def timeouts(self) -> Iterator[None]:
        """Run a stretch of the exchange whose waits are timed.

        Raises:
          RequestFailed, ClientGone: a wait ran out of time (which one depends on the wait).
        """
        scope = self._scope = trio.CancelScope()
        try:
            with scope:
                yield
        finally:
            self._scope = None
        if scope.cancelled_caught:
            raise self._timeout_error()

    def _arm(self, wait: Wait, seconds: float) -> None:
        """Give the wait about to start ``seconds`` from now."""
        scope = self._scope
        assert scope is not None, "a wait outside Exchange.timeouts()"
        if scope.cancel_called:
            # The last wait's deadline passed just as it ended: its error
            # stands, raised at the next checkpoint.
            return
        self._waiting = wait
        deadline = trio.current_time() + seconds
        if abs(deadline - scope.deadline) >= min(LAZY_DEADLINE_SECONDS, seconds * LAZY_DEADLINE_SHARE):
            scope.deadline = deadline

    def _lift_deadline(self) -> None:
        """A write of :meth:`to_client` waits for the client: no deadline of the exchange's applies.

        The client's transport times the wait by its progress (a ``SendTimeout``
        is a ``BrokenResourceError``). The deadline the last wait left is lifted,
        unless it passed already (its error stands, as in :meth:`_arm`); the next
        wait arms one again.
        """
        scope = self._scope
        if scope is not None and not scope.cancel_called:
            scope.deadline = math.inf

    def _timeout_error(self) -> Exception:
        wait = self._waiting
        if wait is Wait.CLIENT_READ:
            return RequestFailed(408, "client too slow sending the request body")
        if wait is Wait.UPSTREAM_WRITE:
            return RequestFailed(504, "upstream stopped reading the request")
        return self._upstream_failed("upstream timed out", status=504)

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
            data = await self.down.stream.receive_some(READ_SIZE)
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
                    relayed = hdr.downstream_response_headers(wire.headers, via=self.ctx.via, own=self.ctx.own_headers)
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

"""WebSocket upgrades forwarded to an upstream, then bytes spliced both ways.

The proxy does not parse WebSocket frames: once the upstream has answered
``101 Switching Protocols`` and the client has been told so, the two
connections are joined byte for byte until either side closes, or until no
byte has moved either way for the route's ``ws_idle_timeout_seconds``. Not
parsing frames, snakeway sends no pings of its own: an application that
wants a quiet tunnel kept open sends its own pings (or any message) more
often than that. Bytes read past either head (h11's ``trailing_data`` on the
client's side, the wire's ``trailing`` on the upstream's) are delivered first.
With plain TCP on both sides each direction is :func:`snakeway.tcprelay.relay`, at
one trip through trio's scheduler per chunk relayed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import h11
import trio

from snakeway.config.model import Route
from snakeway.proxy import headers as hdr
from snakeway.proxy.balance import Balancer
from snakeway.proxy.exchange import Exchange
from snakeway.proxy.forward import ClientGone, ForwardContext, RequestFailed, connect
from snakeway.proxy.forward import upstream_request as plain_upstream_request
from snakeway.proxy.h11io import READ_SIZE, H11Stream
from snakeway.proxy.strict import Target
from snakeway.proxy.wscount import SharedWebSocketCounts
from snakeway.tcp import TcpStream
from snakeway.tcprelay import Traffic, relay

logger = logging.getLogger(__name__)

UPGRADE_HEADERS = [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]


def wants_websocket(headers: hdr.Headers) -> bool:
    """``headers`` (a request's) ask for a WebSocket upgrade."""
    return hdr.request_headers(headers).wants_websocket()


class WebSocketSlots:
    """Counts open WebSockets per route against ``ws_max_connections``.

    Only routes with a limit are counted: a route without one takes no lock and no table
    entry, so any number of such routes can have WebSockets open.

    Args:
      shared: with several workers, the table every worker of the supervisor counts in (the
        limit is for the server); without it the count is this process's own.
    """

    def __init__(self, shared: SharedWebSocketCounts | None = None) -> None:
        self._open: dict[tuple[str, ...], int] = {}
        self._shared = shared

    @contextmanager
    def take(self, route: Route) -> Iterator[None]:
        """Hold a slot; raises RequestFailed(503) when the route is full."""
        limit = route.ws_max_connections
        if limit is None:
            yield
            return
        key = _key(route)
        if self._shared is not None:
            index = self._shared.acquire(key, limit)
            if index is None:
                raise RequestFailed(503, f"too many WebSocket connections on {route.path}")
            try:
                yield
            finally:
                self._shared.release(index)
            return
        count = self._open.get(key, 0)
        if count >= limit:
            raise RequestFailed(503, f"too many WebSocket connections on {route.path}")
        self._open[key] = count + 1
        try:
            yield
        finally:
            if self._open[key] == 1:
                del self._open[key]
            else:
                self._open[key] -= 1


def _key(route: Route) -> tuple[str, ...]:
    # Routes are keyed by what they match, so a reload keeps the count.
    return (route.path, *route.hosts)


async def proxy_websocket(
    down: H11Stream,
    request: h11.Request,
    headers: hdr.Headers,
    target: Target,
    route: Route,
    balancer: Balancer,
    ctx: ForwardContext,
    slots: WebSocketSlots,
) -> int:
    """Forward an upgrade request; on 101 splice the connections until one closes.

    Returns the status sent to the client. Raises RequestFailed/ClientGone like
    :func:`snakeway.proxy.forward.forward`.
    """
    with slots.take(route):
        with trio.move_on_after(ctx.body_timeout) as upgrade_read:
            await _finish_upgrade_request(down)
        if upgrade_read.cancelled_caught:
            raise RequestFailed(408, "client too slow sending the upgrade request")
        up_request = plain_upstream_request(request, headers, target, ctx)
        up_request = up_request._replace(headers=[*up_request.headers, *UPGRADE_HEADERS])
        conn = await connect(balancer, ctx)
        down.served_by = conn.label
        try:
            exchange = Exchange(down, conn, ctx, limit=0)
            with exchange.timeouts():  # the handshake is timed, the tunnel is not
                wire = conn.wire
                await exchange.to_upstream([wire.start_request(up_request, upgrade=True), wire.end_request()])
                if await exchange.read_head() != 101:  # 1xx other than 101 are skipped
                    return await exchange.relay_response()
                switch = h11.InformationalResponse(
                    status_code=101,
                    headers=[
                        *hdr.downstream_response_headers(wire.headers, via=ctx.via, own=ctx.own_headers),
                        *UPGRADE_HEADERS,
                    ],
                    reason=wire.reason,
                )
                await exchange.to_client(down.encode((switch,)))
            if await splice(down.stream, bytes(down.conn.trailing_data[0]), conn.stream,
                            wire.trailing, idle_timeout=route.ws_idle_timeout_seconds):
                logger.info("%s: WebSocket on %s closed after %g s without traffic",
                            ctx.client_ip, route.path, route.ws_idle_timeout_seconds)
            return 101
        finally:
            await ctx.pool.discard(conn)


async def _finish_upgrade_request(down: H11Stream) -> None:
    """Read the rest of the upgrade request up to h11's PAUSED."""
    while True:
        event = await down.next_event()
        if event is h11.PAUSED:
            return
        if type(event) is h11.ConnectionClosed:
            raise ClientGone("client closed during the upgrade")
        if type(event) is h11.Data and event.data:
            raise RequestFailed(400, "an upgrade request must not carry a body")


async def splice(
    a: trio.abc.Stream, a_pending: bytes, b: trio.abc.Stream, b_pending: bytes, *, idle_timeout: float = math.inf
) -> bool:
    """Copy bytes a->b and b->a until either direction ends, then stop both.

    The splice also stops once no byte has moved either way (read from one
    side or written to the other) for ``idle_timeout`` seconds. Returns
    whether that is why it stopped. The streams stay open: closing them is
    the caller's job.
    """
    # When bytes last moved: noted by the pumps (a clock read per chunk), checked by a
    # watchdog that wakes once per idle period rather than a deadline moved per chunk.
    traffic = Traffic(trio.current_time())
    # Plain TCP on both sides (the common case) relays at one schedule point per chunk;
    # anything else (a trio.SSLStream side, memory streams in tests) goes through the
    # generic stream calls.
    direct = type(a) is TcpStream and type(b) is TcpStream
    idle = False
    async with trio.open_nursery() as nursery:

        async def pump(src: trio.abc.Stream, dst: trio.abc.Stream, pending: bytes) -> None:
            try:
                if pending:
                    await dst.send_all(pending)
                    traffic.moved = trio.current_time()
                if direct:
                    await relay(src, dst, traffic)  # type: ignore[arg-type]
                else:
                    while data := await src.receive_some(READ_SIZE):
                        traffic.moved = trio.current_time()
                        await dst.send_all(data)
                        traffic.moved = trio.current_time()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # either side going away ends the tunnel
            nursery.cancel_scope.cancel()

        async def watchdog() -> None:
            nonlocal idle
            # The pumps move the deadline forward without waking this task: it sleeps once per idle period
            # instead of being woken for every chunk.
            while trio.current_time() < traffic.moved + idle_timeout:  # noqa: ASYNC110
                await trio.sleep_until(traffic.moved + idle_timeout)
            idle = True
            nursery.cancel_scope.cancel()

        nursery.start_soon(pump, a, b, a_pending)
        nursery.start_soon(pump, b, a, b_pending)
        if idle_timeout < math.inf:
            nursery.start_soon(watchdog)
    return idle

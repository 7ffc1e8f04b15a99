from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import h11
import pytest
import trio
import trio.testing

from snakeway.config.model import Endpoint, Route, Service, Upstream, UpstreamSettings
from snakeway.proxy.balance import Balancer, Health
from snakeway.proxy.forward import ForwardContext, RequestFailed, connect
from snakeway.proxy.h11io import H11Stream
from snakeway.proxy.pool import Connect, UpstreamConnectError, UpstreamConnection, UpstreamPool
from snakeway.proxy.upstream_wire import UpstreamRequest
from snakeway.tcp import TcpStream

if TYPE_CHECKING:
    from collections.abc import Callable

SETTINGS = UpstreamSettings(connection_timeout_seconds=10.0, connection_pool_size=4, pool_idle_seconds=30.0)


# --- a tiny keep-alive HTTP/1.1 upstream on 127.0.0.1 ------------------------------------------


class TinyUpstream:
    """Answers every request with ``200 ok``; counts connections."""

    def __init__(self, *, close_after: int | None = None, connection_close: bool = False) -> None:
        self.close_after = close_after  # hang up after N responses (a keep-alive timeout)
        self.connection_close = connection_close  # say "Connection: close"
        self.accepted = 0
        self.closed = 0
        self.port = 0
        self._changed = trio.Event()

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)

    async def start(self, nursery: trio.Nursery) -> TinyUpstream:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(trio.serve_listeners, self.handle, listeners)
        self.port = listeners[0].socket.getsockname()[1]
        return self

    async def wait_for(self, predicate: Callable[[TinyUpstream], bool]) -> None:
        with trio.fail_after(5):
            while not predicate(self):
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        self._notify()
        conn = H11Stream(stream, h11.Connection(h11.SERVER))
        served = 0
        try:
            while True:
                event = await conn.next_event()
                if isinstance(event, h11.ConnectionClosed):
                    break
                assert isinstance(event, h11.Request)
                while not isinstance(await conn.next_event(), h11.EndOfMessage):
                    pass
                headers = [(b"content-length", b"2")]
                if self.connection_close:
                    headers.append((b"connection", b"close"))
                await conn.send_response(200, headers, b"ok")
                served += 1
                if conn.conn.our_state is h11.MUST_CLOSE or served == self.close_after:
                    break
                conn.conn.start_next_cycle()
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)
            self.closed += 1
            self._notify()


REQUEST = UpstreamRequest(b"GET", b"/", [(b"host", b"up.test")])


async def send_request(conn: UpstreamConnection) -> None:
    await conn.stream.send_all(conn.wire.start_request(REQUEST) + conn.wire.end_request())


async def exchange(conn: UpstreamConnection) -> tuple[int, bytes]:
    await send_request(conn)
    wire = conn.wire
    while not wire.complete:
        data = await conn.stream.receive_some()
        wire.feed(data) if data else wire.feed_eof()
    return wire.status, b"".join(wire.take_body())


async def get(pool: UpstreamPool, endpoint: Endpoint) -> UpstreamConnection:
    conn = await pool.acquire(endpoint)
    assert await exchange(conn) == (200, b"ok")
    await pool.release(conn)
    return conn


# --- real sockets -------------------------------------------------------------------------------


async def test_keep_alive_connection_is_reused(nursery: trio.Nursery) -> None:
    up = await TinyUpstream().start(nursery)
    pool = UpstreamPool(SETTINGS)
    first = await get(pool, up.endpoint)
    assert not first.reused
    assert pool.idle_count(up.endpoint) == 1
    second = await get(pool, up.endpoint)
    assert second is first
    assert second.reused
    assert up.accepted == 1
    await pool.aclose()
    await up.wait_for(lambda u: u.closed == 1)


async def test_connection_close_response_is_not_kept(nursery: trio.Nursery) -> None:
    up = await TinyUpstream(connection_close=True).start(nursery)
    pool = UpstreamPool(SETTINGS)
    first = await get(pool, up.endpoint)
    assert pool.idle_count() == 0
    second = await get(pool, up.endpoint)
    assert second is not first
    assert not second.reused
    assert up.accepted == 2


async def test_unfinished_exchange_is_closed_on_release(nursery: trio.Nursery) -> None:
    up = await TinyUpstream().start(nursery)
    pool = UpstreamPool(SETTINGS)
    conn = await pool.acquire(up.endpoint)
    await send_request(conn)
    response = await conn.stream.receive_some()
    conn.wire.feed(response[: response.index(b"\r\n\r\n") + 4])  # the response head, but not the body
    assert not conn.reusable()
    await pool.release(conn)
    assert pool.idle_count() == 0
    await up.wait_for(lambda u: u.closed == 1)


# Real time for the two tests below, as the pool's connections are real sockets: a short idle limit.
IDLE = 0.5


async def test_idle_expiry_opens_a_new_connection(nursery: trio.Nursery) -> None:
    up = await TinyUpstream().start(nursery)
    pool = UpstreamPool(replace(SETTINGS, pool_idle_seconds=IDLE))
    first = await get(pool, up.endpoint)
    await trio.sleep(IDLE / 5)
    assert await get(pool, up.endpoint) is first  # idle less than the limit: reused, idle clock restarts
    await trio.sleep(IDLE + 0.05)
    fresh = await get(pool, up.endpoint)
    assert fresh is not first
    assert not fresh.reused
    assert up.accepted == 2
    await up.wait_for(lambda u: u.closed == 1)  # the expired one was closed lazily by acquire


async def test_sweeper_closes_expired_connections(nursery: trio.Nursery) -> None:
    up = await TinyUpstream().start(nursery)
    pool = UpstreamPool(replace(SETTINGS, pool_idle_seconds=IDLE))
    await nursery.start(pool.run)
    asked = trio.current_time()  # before the connection was released
    await get(pool, up.endpoint)
    await trio.sleep(IDLE / 5)
    assert pool.idle_count() == 1
    await up.wait_for(lambda u: u.closed == 1)  # no request: the sweeper closed it
    assert pool.idle_count() == 0
    assert trio.current_time() - asked >= IDLE


async def test_pool_size_caps_idle_connections(nursery: trio.Nursery) -> None:
    up = await TinyUpstream().start(nursery)
    pool = UpstreamPool(replace(SETTINGS, connection_pool_size=2))
    conns = [await pool.acquire(up.endpoint) for _ in range(3)]
    for conn in conns:
        assert await exchange(conn) == (200, b"ok")
    for conn in conns:
        await pool.release(conn)
    assert pool.idle_count(up.endpoint) == 2
    await up.wait_for(lambda u: u.closed == 1)  # the oldest idle one was dropped
    assert await pool.acquire(up.endpoint) is conns[2]  # most recently idle first
    assert await pool.acquire(up.endpoint) is conns[1]
    assert up.accepted == 3


async def test_peer_closed_idle_connection_is_not_reused(nursery: trio.Nursery) -> None:
    up = await TinyUpstream(close_after=1).start(nursery)  # hangs up like a keep-alive timeout
    pool = UpstreamPool(SETTINGS)
    first = await get(pool, up.endpoint)
    assert pool.idle_count() == 1  # h11 could not know: both sides were DONE
    await up.wait_for(lambda u: u.closed == 1)
    assert isinstance(first.stream, TcpStream)
    with trio.fail_after(5):
        await trio.lowlevel.wait_readable(first.stream.socket)  # the FIN has arrived
    second = await get(pool, up.endpoint)
    assert second is not first
    assert not second.reused
    assert up.accepted == 2


async def test_connect_refused_raises_quickly() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    pool = UpstreamPool(SETTINGS)
    endpoint = Endpoint("127.0.0.1", port)
    with trio.fail_after(5), pytest.raises(UpstreamConnectError) as info:
        await pool.acquire(endpoint)
    assert info.value.endpoint == endpoint
    assert "refused" in info.value.reason.lower()
    assert str(endpoint) in str(info.value)


async def test_connect_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async def never(host: str, port: int) -> trio.abc.Stream:
        await trio.sleep_forever()

    pool = UpstreamPool(replace(SETTINGS, connection_timeout_seconds=3.0), connect=never)
    start = trio.current_time()
    with pytest.raises(UpstreamConnectError) as info:
        await pool.acquire(Endpoint("192.0.2.1", 80))
    assert info.value.reason == "timed out"
    assert info.value.timed_out
    assert trio.current_time() - start == pytest.approx(3.0)


def connect_context(settings: UpstreamSettings, connect: Connect) -> ForwardContext:
    return ForwardContext(
        pool=UpstreamPool(settings, connect=connect), health=Health(10.0), settings=settings,
        client_ip="127.0.0.1", scheme="http", body_timeout=1.0, buffer_body=0,
    )


def balanced(*endpoints: Endpoint) -> Balancer:
    service = Service(
        name="app", routes=(Route(hosts=("*",), path="/"),), upstreams=tuple(Upstream(e) for e in endpoints)
    )
    return Balancer(service, Health(10.0))


@pytest.mark.parametrize(
    ("failures", "status"),
    [(["timeout"], 504), (["refused"], 502), (["refused", "timeout"], 504), (["timeout", "refused"], 502)],
)
async def test_no_upstream_connecting_is_504_when_the_last_attempt_timed_out(
    autojump_clock: trio.testing.MockClock, failures: list[str], status: int
) -> None:
    """As nginx: a connect timeout is a gateway timeout, a refused connection a bad gateway."""
    endpoints = [Endpoint("192.0.2.1", 80 + i) for i in range(len(failures))]
    failing = dict(zip(endpoints, failures, strict=True))

    async def fail(host: str, port: int) -> trio.abc.Stream:
        if failing[Endpoint(host, port)] == "refused":
            raise ConnectionRefusedError(111, "Connection refused")
        await trio.sleep_forever()

    settings = replace(SETTINGS, connection_timeout_seconds=3.0)
    ctx = connect_context(settings, fail)
    with pytest.raises(RequestFailed) as info:
        await connect(balanced(*endpoints), ctx)
    assert info.value.status == status
    assert all(not ctx.health.is_up(e, trio.current_time()) for e in endpoints)


# --- fake transports: the bookkeeping -----------------------------------------------------------


class FakeConnect:
    """Hands out the client half of a memory stream pair; keeps the upstream halves."""

    def __init__(self) -> None:
        self.peers: list[trio.abc.Stream] = []

    async def __call__(self, host: str, port: int) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        client, server = trio.testing.memory_stream_pair()
        self.peers.append(server)
        return client


def finish_offline(conn: UpstreamConnection, response: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") -> None:
    """Drive the client state machine through one exchange without I/O."""
    conn.wire.start_request(REQUEST)
    conn.wire.end_request()
    conn.wire.feed(response)
    assert conn.wire.complete


async def peer_closed(peer: trio.abc.Stream) -> bool:
    with trio.move_on_after(1):
        return await peer.receive_some() == b""
    return False


A = Endpoint("a.internal", 80)
B = Endpoint("b.internal", 80)


async def borrow(pool: UpstreamPool, endpoint: Endpoint) -> UpstreamConnection:
    conn = await pool.acquire(endpoint)
    finish_offline(conn)
    return conn


async def test_take_expired_returns_oldest_first(autojump_clock: trio.testing.MockClock) -> None:
    pool = UpstreamPool(SETTINGS, connect=FakeConnect())
    a1, a2, b1 = await borrow(pool, A), await borrow(pool, A), await borrow(pool, B)
    start = trio.current_time()
    await pool.release(a1)
    await trio.sleep(10)
    await pool.release(b1)
    await trio.sleep(10)
    await pool.release(a2)
    assert pool.next_expiry() == start + 30
    assert pool.take_expired(start + 29.9) == []
    assert pool.take_expired(start + 30) == [a1]
    assert pool.next_expiry() == start + 40
    assert set(pool.take_expired(start + 100)) == {b1, a2}
    assert pool.idle_count() == 0
    assert pool.next_expiry() is None


async def test_acquire_is_lifo(autojump_clock: trio.testing.MockClock) -> None:
    pool = UpstreamPool(SETTINGS, connect=FakeConnect())
    a1, a2 = await borrow(pool, A), await borrow(pool, A)
    await pool.release(a1)
    await pool.release(a2)
    assert await pool.acquire(B) not in (a1, a2)
    assert await pool.acquire(A) is a2
    assert await pool.acquire(A) is a1


async def test_unsolicited_bytes_make_a_connection_unreusable(autojump_clock: trio.testing.MockClock) -> None:
    connect = FakeConnect()
    pool = UpstreamPool(SETTINGS, connect=connect)
    conn = await pool.acquire(A)
    finish_offline(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert not conn.reusable()
    await pool.release(conn)
    assert pool.idle_count() == 0
    assert await peer_closed(connect.peers[0])


async def test_discard_and_zero_sizes_close(autojump_clock: trio.testing.MockClock) -> None:
    connect = FakeConnect()
    pool = UpstreamPool(SETTINGS, connect=connect)
    await pool.discard(await borrow(pool, A))
    for settings in (replace(SETTINGS, connection_pool_size=0), replace(SETTINGS, pool_idle_seconds=0)):
        other = UpstreamPool(settings, connect=connect)
        await other.release(await borrow(other, A))
        assert other.idle_count() == 0
    assert [await peer_closed(peer) for peer in connect.peers] == [True, True, True]


async def test_aclose_closes_idle_and_refuses_more(autojump_clock: trio.testing.MockClock) -> None:
    connect = FakeConnect()
    pool = UpstreamPool(SETTINGS, connect=connect)
    idle, busy = await borrow(pool, A), await borrow(pool, B)
    await pool.release(idle)
    await pool.aclose()
    assert await peer_closed(connect.peers[0])
    await pool.release(busy)  # released after close: closed, not kept
    assert pool.idle_count() == 0
    assert await peer_closed(connect.peers[1])
    with pytest.raises(trio.ClosedResourceError):
        await pool.acquire(A)


async def test_release_under_cancellation_still_closes(autojump_clock: trio.testing.MockClock) -> None:
    connect = FakeConnect()
    pool = UpstreamPool(SETTINGS, connect=connect)
    conn = await pool.acquire(A)  # exchange not finished: must be closed
    with trio.CancelScope() as scope:
        scope.cancel()
        await pool.release(conn)
    assert await peer_closed(connect.peers[0])

"""A connection's one cancel scope and the deadline its waits arm (snakeway/proxy/deadlines.py).

The bookkeeping alone, then whole connections (:class:`Http1Connection`) on trio's MockClock over
memory streams: each expiry as a client sees it, a slow but steady reader that no deadline cuts,
shutdown closing idle connections but not busy ones, and the request path entering no cancel scope.
The upstreams are memory streams too: the pool's ``connect`` hands out one end, a task plays the other.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st

from snakeway.config.model import ClientSettings, Config, ServerSettings, UpstreamSettings
from snakeway.proxy.balance import Health
from snakeway.proxy.deadlines import LAZY_DEADLINE_SECONDS, LAZY_DEADLINE_SHARE, Deadlines, Wait
from snakeway.proxy.forward import connect_budget
from snakeway.proxy.http1 import Http1Connection
from snakeway.proxy.listener import Drain, ListenerContext
from snakeway.proxy.pool import UpstreamPool
from snakeway.proxy.runtime import Shared, build_runtime
from snakeway.tcp import TcpStream
from tests.helpers import LOOPBACK, service_config

# --- the bookkeeping --------------------------------------------------------------------------------------


def slack(seconds: float) -> float:
    return min(LAZY_DEADLINE_SECONDS, seconds * LAZY_DEADLINE_SHARE)


@given(
    first=st.floats(0.001, 1000), gap=st.floats(0, 100), second=st.floats(0.001, 1000),
)
def test_an_armed_deadline_is_the_one_asked_for_give_or_take_the_slack(first: float, gap: float, second: float) -> None:
    async def main() -> tuple[float, float, Wait]:
        deadlines = Deadlines(trio.CancelScope())
        deadlines.arm(Wait.UPSTREAM_WRITE, first)
        await trio.sleep(gap)
        if gap >= first:  # the first deadline passed: the next wait is not armed, the error stands
            return math.inf, 0.0, deadlines.waiting
        deadlines.arm(Wait.UPSTREAM_READ, second)
        return deadlines.scope.deadline, trio.current_time() + second, deadlines.waiting

    kept, asked, waiting = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    if kept == math.inf:
        assert waiting is Wait.UPSTREAM_WRITE
        return
    assert waiting is Wait.UPSTREAM_READ
    assert abs(kept - asked) < slack(second) or kept == asked


async def test_arming_the_same_timeout_again_keeps_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    deadlines = Deadlines(trio.CancelScope())
    deadlines.arm(Wait.IDLE, 60)
    first = deadlines.scope.deadline
    await trio.sleep(0.2)
    deadlines.arm(Wait.UPSTREAM_WRITE, 60)
    assert deadlines.scope.deadline == first  # moved by less than the slack: kept
    assert deadlines.waiting is Wait.UPSTREAM_WRITE
    deadlines.arm(Wait.CLIENT_READ, 5)
    assert deadlines.scope.deadline == trio.current_time() + 5


async def test_a_lifted_deadline_never_passes_until_the_next_wait_arms_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.CancelScope() as scope:
        deadlines = Deadlines(scope)
        deadlines.arm(Wait.UPSTREAM_READ, 1)
        deadlines.lift()
        await trio.sleep(100)
        deadlines.arm(Wait.UPSTREAM_READ, 1)
        await trio.sleep(100)
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(101)


async def test_a_wait_armed_after_the_deadline_passed_keeps_the_error_of_the_one_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.CancelScope() as scope:
        deadlines = Deadlines(scope)
        deadlines.arm(Wait.CLIENT_READ, 1)
        autojump_clock.jump(2)  # the read ended just as its deadline passed
        deadlines.arm(Wait.UPSTREAM_WRITE, 60)
        deadlines.lift()
        await trio.sleep(10)
    assert scope.cancelled_caught
    assert deadlines.waiting is Wait.CLIENT_READ


@given(
    upstreams=st.integers(1, 20), connect=st.floats(0.01, 1000), read=st.floats(0.01, 1000),
)
@example(upstreams=16, connect=0.99999, read=1.0)  # once short by a rounding error
def test_the_connect_budget_leaves_every_upstream_its_connection_timeout(
    upstreams: int, connect: float, read: float
) -> None:
    budget = connect_budget(UpstreamSettings(connection_timeout_seconds=connect, read_timeout_seconds=read), upstreams)
    assert budget - slack(budget) >= upstreams * connect  # kept early by the slack at most, still not in the way
    assert budget >= read


# --- whole connections ------------------------------------------------------------------------------------

Serve = Callable[[trio.abc.Stream], Awaitable[None]]
IDLE, HEADER, BODY, READ = 50.0, 7.0, 11.0, 13.0  # all different: a test can tell which timed out


def settings() -> ServerSettings:
    return ServerSettings(
        client=ClientSettings(idle_timeout_seconds=IDLE, header_timeout_seconds=HEADER, body_timeout_seconds=BODY),
        upstream=UpstreamSettings(read_timeout_seconds=READ),
    )


class Proxy:
    """Connections of one listener, proxying every request to ``serve`` (one task per upstream connection)."""

    def __init__(self, nursery: trio.Nursery, serve: Serve, config: Config) -> None:
        self.nursery = nursery
        self.serve = serve
        self.upstream_connections = 0
        pool = UpstreamPool(config.server.upstream, connect=self._connect)
        shared = Shared(pool=pool, health=Health(config.server.upstream.failure_cooldown_seconds))
        runtime = build_runtime(config, shared)
        self.counters = shared.counters
        self.drain = Drain()
        self.ctx = ListenerContext(key=next(iter(runtime.listeners)), runtime=lambda: runtime, shared=shared,
                                   drain=self.drain)

    async def _connect(self, host: str, port: int) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        self.upstream_connections += 1
        self.nursery.start_soon(self.serve, theirs)
        return ours

    def open(self, stream: trio.abc.Stream | None = None) -> trio.abc.Stream:
        """A new client connection served in the nursery: the client's end (or serve ``stream``)."""
        client = None
        if stream is None:
            client, stream = trio.testing.memory_stream_pair()
        self.nursery.start_soon(Http1Connection(stream, self.ctx, LOOPBACK).run)
        return client  # type: ignore[return-value]


def response(body: bytes = b"hello") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def answering(answer: bytes, *, after: float = 0.0) -> Serve:
    """An upstream that answers each request head with ``answer`` (``after`` seconds later)."""

    async def serve(stream: trio.abc.Stream) -> None:
        buffer = b""
        while chunk := await stream.receive_some():
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                _, buffer = buffer.split(b"\r\n\r\n", 1)
                if after:
                    await trio.sleep(after)
                await stream.send_all(answer)

    return serve


def silent(seen: list[bytes]) -> Serve:
    """An upstream that reads (and records) what it is sent, and never answers."""

    async def serve(stream: trio.abc.Stream) -> None:
        while chunk := await stream.receive_some():
            seen.append(bytes(chunk))

    return serve


async def until_closed(client: trio.abc.Stream) -> bytes:
    """Everything the proxy sends until it closes the connection."""
    out = bytearray()
    while chunk := await client.receive_some():
        out += chunk
    return bytes(out)


async def one_response(client: trio.abc.Stream, request: bytes, body: bytes = b"hello") -> None:
    await client.send_all(request)
    got = b""
    while not got.endswith(body):
        chunk = await client.receive_some()
        assert chunk, got
        got += chunk
    assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(body)


GET = b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n"


async def test_a_kept_alive_connection_left_idle_is_closed_silently_after_the_idle_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = Proxy(nursery, answering(response()), service_config([9], server=settings()))
    client = proxy.open()
    await one_response(client, GET)
    idle_from = trio.current_time()
    assert await until_closed(client) == b""
    assert trio.current_time() - idle_from == pytest.approx(IDLE)


async def test_a_new_connection_that_sends_nothing_is_closed_silently_after_the_header_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = Proxy(nursery, answering(response()), service_config([9], server=settings()))
    client = proxy.open()
    assert await until_closed(client) == b""
    assert trio.current_time() == pytest.approx(HEADER)


async def test_a_head_that_stops_coming_is_408_the_header_timeout_after_its_first_byte(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = Proxy(nursery, answering(response()), service_config([9], server=settings()))
    client = proxy.open()
    await one_response(client, GET)
    await trio.sleep(3)
    first_byte = trio.current_time()
    await client.send_all(b"GET /y HTTP/1.1\r\n")
    await trio.sleep(4)
    await client.send_all(b"Host: a.test\r\n")  # still coming, but the head's time runs from its first byte
    answer = await until_closed(client)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in answer.lower()
    assert trio.current_time() - first_byte == pytest.approx(HEADER)
    assert proxy.upstream_connections == 1  # the first request's


@pytest.mark.parametrize("length", [10, 1_000_000], ids=["read-first", "streamed"])
async def test_a_body_that_stops_coming_is_408_the_body_timeout_after_its_last_byte(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, length: int
) -> None:
    seen: list[bytes] = []
    proxy = Proxy(nursery, silent(seen), service_config([9], server=settings()))
    client = proxy.open()
    await client.send_all(b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n0123" % length)
    await trio.sleep(5)
    await client.send_all(b"4567")
    last_byte = trio.current_time()
    answer = await until_closed(client)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in answer.lower()
    assert trio.current_time() - last_byte == pytest.approx(BODY)
    # A small body is read before connecting: the upstream saw nothing of it. A large one streamed.
    assert (b"".join(seen).startswith(b"POST /up ")) == (length > 64 * 1024)
    assert proxy.counters.totals[4] == 1


async def test_a_silent_upstream_is_504_after_the_read_timeout_and_the_connection_closes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[bytes] = []
    proxy = Proxy(nursery, silent(seen), service_config([9], server=settings()))
    client = proxy.open()
    await client.send_all(GET)
    answer = await until_closed(client)
    assert answer.startswith(b"HTTP/1.1 504 ")
    assert b"connection: close" in answer.lower()
    assert b"504 Gateway Timeout: the upstream server did not answer in time" in answer
    assert trio.current_time() == pytest.approx(READ)
    assert b"".join(seen).startswith(b"GET /x ")
    assert proxy.counters.totals[5] == 1


async def test_an_upstream_that_stalls_mid_response_gets_the_connection_closed_and_no_error_appended(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"

    async def stalls(stream: trio.abc.Stream) -> None:
        await stream.receive_some()
        await stream.send_all(head + b"x" * 10)
        await trio.sleep(3)
        await stream.send_all(b"y" * 10)
        await trio.sleep_forever()

    proxy = Proxy(nursery, stalls, service_config([9], server=settings()))
    client = proxy.open()
    await client.send_all(GET)
    answer = await until_closed(client)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"x" * 10 + b"y" * 10)  # all that came, and nothing after it
    assert trio.current_time() == pytest.approx(3 + READ)
    assert proxy.counters.totals[4] == 1  # logged as 499: the client saw the connection close


class PacedTransport(TcpStream):
    """A TcpStream whose kernel takes ``window`` bytes at a time, each once the client read the last.

    As the real one, it calls ``on_send_blocked`` before each wait for the client (the hook the
    exchange lifts its deadline from). Bytes go to ``peer``, the client's memory stream.
    """

    def __init__(self, inner: trio.abc.Stream, window: int) -> None:  # no socket: nothing of TcpStream's set-up
        self.inner = inner
        self.window = window
        self.send_timeout = math.inf
        self.on_send_blocked = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self.inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            if len(view) < len(data) and self.on_send_blocked is not None:
                self.on_send_blocked()
            await self.inner.send_all(view[: self.window])  # a lockstep stream: waits for the client's read
            view = view[self.window :]

    async def send_eof(self) -> None:
        await self.inner.aclose()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_slow_but_steady_reader_gets_a_response_that_outlasts_every_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    body = b"z" * (64 * 1024)
    proxy = Proxy(nursery, answering(response(body)), service_config([9], server=settings()))
    client, server = trio.testing.lockstep_stream_pair()
    proxy.open(PacedTransport(server, 1024))
    await client.send_all(GET)
    got = b""
    started = trio.current_time()
    while not got.endswith(body):
        chunk = await client.receive_some(1024)
        assert chunk, f"cut after {len(got)} bytes"
        got += chunk
        await trio.sleep(1)  # a kilobyte a second: a minute, past the read (13 s) and idle (50 s) timeouts
    assert trio.current_time() - started > IDLE + READ
    assert got.startswith(b"HTTP/1.1 200 ")
    await client.send_all(GET)  # and the connection is still kept
    assert (await client.receive_some(1024)).startswith(b"HTTP/1.1 200 ")


async def test_shutdown_closes_idle_connections_at_once_and_lets_busy_ones_finish(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = Proxy(nursery, answering(response(), after=5), service_config([9], server=settings()))
    idle, busy = proxy.open(), proxy.open()
    await one_response(idle, GET)
    await busy.send_all(GET)
    await trio.sleep(1)
    proxy.drain.close()
    stopped = trio.current_time()
    assert await until_closed(idle) == b""
    assert trio.current_time() == stopped  # at once
    answer = await until_closed(busy)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nhello")  # finished, then closed
    assert trio.current_time() == pytest.approx(stopped + 4)
    late = proxy.open()  # accepted as shutdown began: closed without waiting for a request
    assert await until_closed(late) == b""
    assert trio.current_time() == pytest.approx(stopped + 4)


async def test_kept_alive_requests_enter_no_cancel_scope_and_move_no_deadline_with_the_default_timeouts(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = Proxy(nursery, answering(response()), service_config([9]))
    client = proxy.open()
    await one_response(client, GET)  # the connection's scope, the upstream connection: made once
    entered: list[trio.CancelScope] = []
    moved: list[float] = []
    enter = trio.CancelScope.__enter__
    deadline: property = trio.CancelScope.deadline  # type: ignore[assignment]

    def connections_task() -> bool:
        return trio.lowlevel.current_task().name.endswith("Http1Connection.run")

    def counting_enter(scope: trio.CancelScope) -> trio.CancelScope:
        if connections_task():
            entered.append(scope)
        return enter(scope)

    def counting_set(scope: trio.CancelScope, value: float) -> None:
        if connections_task():
            moved.append(value)
        deadline.fset(scope, value)  # type: ignore[misc]

    monkeypatch.setattr(trio.CancelScope, "__enter__", counting_enter)
    monkeypatch.setattr(trio.CancelScope, "deadline", property(deadline.fget, counting_set))
    for _ in range(3):
        await one_response(client, GET)
    assert entered == []
    assert moved == []

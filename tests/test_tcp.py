"""TcpStream: trio's stream contract on real 127.0.0.1 sockets, its error mapping, and its send
timeout (real time: a write may go without progress for that long, however long it takes)."""

from __future__ import annotations

import os
import socket
import ssl

import pytest
import trio
import trio.lowlevel
import trio.testing
import trustme

from snakeway.tcp import SendTimeout, TcpStream, open_tcp_stream

SEND_TIMEOUT = 1.0


async def _pair() -> tuple[TcpStream, TcpStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        client = await open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
        accepted = await listener.accept()  # the connection waits in the backlog
    return client, TcpStream(accepted)


async def _reset(stream: TcpStream) -> None:
    """Close ``stream`` with a RST rather than a FIN (SO_LINGER with a zero timeout)."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    await stream.aclose()


async def test_meets_trios_stream_contract() -> None:
    # send/receive/close semantics, checkpoints on every call, send_eof, and
    # that a closed stream raises ClosedResourceError: trio's own conformance checks.
    await trio.testing.check_half_closeable_stream(_pair, None)


async def test_a_large_send_completes_through_a_slow_reader() -> None:
    client, server = await _pair()
    payload = os.urandom(8 * 1024 * 1024)  # far more than the socket buffers hold
    received = bytearray()

    async def read_slowly() -> None:
        while len(received) < len(payload):
            received.extend(await server.receive_some(4096))
            await trio.lowlevel.checkpoint()

    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(read_slowly)
        await client.send_all(payload)
    assert bytes(received) == payload


async def test_a_reset_by_the_peer_is_a_broken_resource() -> None:
    client, server = await _pair()
    await _reset(server)
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):  # the first writes may land in the buffer before the RST is seen
            await client.send_all(b"x" * 65536)
            await client.receive_some(1)
    await client.aclose()


async def test_errors_are_checkpoints_too() -> None:
    client, server = await _pair()
    await _reset(server)
    await trio.testing.wait_all_tasks_blocked()
    with trio.testing.assert_checkpoints(), pytest.raises(trio.BrokenResourceError):
        await client.receive_some(10)
    await client.aclose()
    with trio.testing.assert_checkpoints(), pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"")


async def test_close_releases_the_descriptor_and_later_calls_say_closed() -> None:
    client, server = await _pair()
    fd = client.socket.fileno()
    await client.aclose()
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some(1)
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"x")
    assert await server.receive_some(1) == b""  # the peer sees an orderly close
    await server.aclose()


async def test_a_cancelled_task_neither_reads_nor_writes() -> None:
    client, server = await _pair()
    async with client, server:
        await client.send_all(b"ping")
        with trio.CancelScope() as scope:
            scope.cancel()
            await server.receive_some(10)
            await server.send_all(b"lost")
        assert await server.receive_some(10) == b"ping"  # still there: the cancelled read took nothing
        await server.send_all(b"pong")
        assert await client.receive_some(10) == b"pong"  # the cancelled write sent nothing


async def _accepted_pair(send_timeout: float) -> tuple[trio.SocketStream, TcpStream]:
    """A client with a small receive buffer, and the server's end as snakeway accepts it."""
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        client = trio.socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # writes block soon
        await client.connect(listener.getsockname())
        sock, _ = listener.accept()
    return trio.SocketStream(client), TcpStream.accepted(sock, send_timeout=send_timeout)


async def test_a_steady_slow_reader_gets_a_write_that_takes_longer_than_the_send_timeout() -> None:
    client, server = await _accepted_pair(SEND_TIMEOUT)
    payload = os.urandom(64 * 1024)
    received = bytearray()

    async def read_steadily() -> None:  # 20 KiB/s: the kernel takes bytes well within each second
        while len(received) < len(payload):
            received.extend(await client.receive_some(2048))
            await trio.sleep(0.1)

    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(read_steadily)
        started = trio.current_time()
        await server.send_all(payload)
        took = trio.current_time() - started
    assert bytes(received) == payload
    assert took > 2 * SEND_TIMEOUT  # one write, far longer than the timeout, and never cut


async def test_a_write_to_a_reader_that_stops_fails_after_the_send_timeout() -> None:
    client, server = await _accepted_pair(SEND_TIMEOUT)
    async with client, server:
        started = trio.current_time()
        with trio.fail_after(SEND_TIMEOUT + 5), pytest.raises(SendTimeout):
            await server.send_all(os.urandom(4 * 1024 * 1024))
        assert trio.current_time() - started >= SEND_TIMEOUT


async def test_the_clock_restarts_when_the_reader_takes_bytes_and_stops_when_it_stops() -> None:
    client, server = await _accepted_pair(SEND_TIMEOUT)
    read = 0
    last_read = 0.0

    async def read_then_stop() -> None:
        nonlocal read, last_read
        while read < 40 * 1024:
            read += len(await client.receive_some(2048))
            last_read = trio.current_time()
            await trio.sleep(0.1)

    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(read_then_stop)
        started = trio.current_time()
        with trio.fail_after(15), pytest.raises(SendTimeout):
            await server.send_all(os.urandom(4 * 1024 * 1024))
        failed = trio.current_time()
    assert read >= 40 * 1024
    assert failed - started > 2 * SEND_TIMEOUT  # the reads kept the write alive...
    assert failed - last_read < SEND_TIMEOUT + 2  # ...and once they stopped, the timeout ran


async def test_a_send_tells_its_owner_when_it_waits_for_the_peer_and_only_then() -> None:
    client, server = await _accepted_pair(SEND_TIMEOUT)
    waits: list[int] = []
    server.on_send_blocked = lambda: waits.append(len(received))
    received = bytearray()
    async with client, server:
        await server.send_all(b"fits in the socket buffer")
        assert waits == []
        async with trio.open_nursery() as nursery:

            async def read_later() -> None:
                await trio.sleep(0.2)
                while len(received) < 1024 * 1024:
                    received.extend(await client.receive_some(65536))

            nursery.start_soon(read_later)
            await server.send_all(os.urandom(1024 * 1024 - 25))
        assert waits and waits[0] == 0  # first told before the peer had read anything


async def test_a_cancelled_blocked_write_is_cancelled_not_timed_out() -> None:
    client, server = await _accepted_pair(SEND_TIMEOUT)
    async with client, server:
        with trio.move_on_after(SEND_TIMEOUT / 4) as scope:
            await server.send_all(os.urandom(4 * 1024 * 1024))
        assert scope.cancelled_caught


async def test_tls_over_the_stream_has_the_same_send_timeout() -> None:
    # snakeway's TLS connections are trio.SSLStream over an accepted TcpStream: the records it
    # writes go through TcpStream.send_all, so a steady reader is served and a stopped one cut.
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("a.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    raw_client, raw_server = await _accepted_pair(SEND_TIMEOUT)
    client = trio.SSLStream(raw_client, client_ctx, server_hostname="a.test")
    server = trio.SSLStream(raw_server, server_ctx, server_side=True)
    payload = os.urandom(48 * 1024)
    received = bytearray()

    async def read_steadily() -> None:
        while len(received) < len(payload):
            received.extend(await client.receive_some(2048))
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        await server.do_handshake()
    async with raw_client, raw_server:
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_steadily)
            await server.send_all(payload)
        assert trio.current_time() - started > SEND_TIMEOUT
        assert bytes(received) == payload
        with trio.fail_after(SEND_TIMEOUT + 5), pytest.raises(SendTimeout):
            await server.send_all(os.urandom(4 * 1024 * 1024))  # nobody reads now


class _Steps(trio.abc.Instrument):
    """Counts the steps of one task: how often it went through trio's scheduler."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_a_ready_read_right_after_a_send_rides_on_the_sends_schedule_point() -> None:
    a, b = await _pair()
    steps = _Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        await b.send_all(b"ready")  # the peer's bytes are there before a's send: the read will not wait
        steps.steps = 0
        await a.send_all(b"request")
        assert await a.receive_some(5) == b"ready"
        assert steps.steps == 1  # one trip for the pair: the send's
        await b.send_all(b"again")
        steps.steps = 0
        with trio.testing.assert_checkpoints():  # a read after a read yields, however ready its bytes
            assert await a.receive_some(3) == b"aga"
            assert await a.receive_some(2) == b"in"
        assert steps.steps == 2
    finally:
        trio.lowlevel.remove_instrument(steps)
        await a.aclose()
        await b.aclose()


async def test_a_loop_of_ready_reads_yields_on_every_round() -> None:
    a, b = await _pair()
    await b.send_all(b"x" * 100)
    for _ in range(10):
        with trio.testing.assert_checkpoints():
            assert await a.receive_some(10) == b"x" * 10
    await a.aclose()
    await b.aclose()

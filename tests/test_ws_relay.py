"""tcprelay.relay, one direction of a WebSocket tunnel between two TcpStreams: bytes exact however
the writes block, the end of the source, errors, the destination's send timeout, and a
checkpoint per round for a source that is always ready. Real 127.0.0.1 sockets, real time."""

from __future__ import annotations

import math
import os
import socket
import threading

import pytest
import trio
import trio.lowlevel

from snakeway.tcp import SendTimeout, TcpStream
from snakeway.tcprelay import RELAY_BUFFER_SIZE, Traffic, relay

SEND_TIMEOUT = 1.0


def _connected(*, rcvbuf: int | None = None, sndbuf: int | None = None) -> tuple[socket.socket, socket.socket]:
    """A connected pair of blocking standard sockets (client, accepted); buffer sizes set before connecting."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        if sndbuf is not None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if rcvbuf is not None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        client.connect(listener.getsockname())
        accepted, _ = listener.accept()
    return client, accepted


class Hop:
    """One direction of a tunnel: ``feed`` (a peer's socket) -> src -> relay -> dst -> ``out`` (the other peer's)."""

    def __init__(self, *, out_rcvbuf: int | None = None, send_timeout: float = math.inf,
                 src_rcvbuf: int | None = None) -> None:
        self.feed, src = _connected(sndbuf=src_rcvbuf)
        if src_rcvbuf is not None:
            src.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, src_rcvbuf)
        self.out, dst = _connected(rcvbuf=out_rcvbuf)
        self.src_socket = src
        self.src = TcpStream.accepted(src)
        self.dst = TcpStream.accepted(dst, send_timeout=send_timeout)
        self.feed.setblocking(False)
        self.out.setblocking(False)
        self.feed_trio = trio.socket.from_stdlib_socket(self.feed)
        self.out_trio = trio.socket.from_stdlib_socket(self.out)
        self.traffic = Traffic(-math.inf)

    async def run(self) -> None:
        await relay(self.src, self.dst, self.traffic)

    async def aclose(self) -> None:
        for stream in (self.src, self.dst):
            await stream.aclose()
        self.feed_trio.close()
        self.out_trio.close()


async def _send(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await sock.send(view[: 1 << 16]):]


async def _receive(sock: trio.socket.SocketType, size: int, *, pause: float = 0.0) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await sock.recv(1 << 16)
        assert chunk, f"end of stream after {len(data)} of {size} bytes"
        data += chunk
        if pause:
            await trio.sleep(pause)
    return bytes(data)


async def test_megabytes_both_ways_at_once_arrive_exact_while_the_writes_block() -> None:
    there, back = Hop(out_rcvbuf=4096), Hop(out_rcvbuf=4096)
    up, down = os.urandom(6 << 20), os.urandom(5 << 20)
    got: dict[str, bytes] = {}

    async def read_late(name: str, hop: Hop, size: int) -> None:
        await trio.sleep(0.3)  # the socket buffers fill first: both relays wait on writes
        got[name] = await _receive(hop.out_trio, size)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(there.run)
            nursery.start_soon(back.run)
            nursery.start_soon(_send, there.feed_trio, up)
            nursery.start_soon(_send, back.feed_trio, down)
            nursery.start_soon(read_late, "up", there, len(up))
            nursery.start_soon(read_late, "down", back, len(down))
            while len(got) < 2:
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert got["up"] == up
    assert got["down"] == down
    await there.aclose()
    await back.aclose()


async def test_returns_at_the_end_of_the_source_after_every_byte_before_it() -> None:
    hop = Hop()
    payload = os.urandom(3 << 20)
    got = []

    async def send_then_end() -> None:
        await _send(hop.feed_trio, payload)
        hop.feed.shutdown(socket.SHUT_WR)

    async def receive() -> None:
        got.append(await _receive(hop.out_trio, len(payload)))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_then_end)
            nursery.start_soon(receive)
            await hop.run()
    assert got == [payload]
    assert hop.traffic.moved <= trio.current_time()
    assert hop.traffic.moved > trio.current_time() - 10  # noted when the last chunk moved
    await hop.aclose()


async def test_a_reset_source_is_a_broken_resource() -> None:
    hop = Hop()
    hop.feed.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    hop.feed_trio.close()
    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError):
        await hop.run()
    await hop.aclose()


async def test_a_destination_gone_is_a_broken_resource() -> None:
    hop = Hop()
    hop.out.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    hop.out_trio.close()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_send, hop.feed_trio, os.urandom(4 << 20))
            with pytest.raises(trio.BrokenResourceError):
                await hop.run()
            nursery.cancel_scope.cancel()
    await hop.aclose()


async def test_a_destination_that_stops_reading_is_cut_after_its_send_timeout() -> None:
    hop = Hop(out_rcvbuf=4096, send_timeout=SEND_TIMEOUT)
    read = 0
    last_read = 0.0

    async def read_then_stop() -> None:  # steadily, well within each send timeout, then not at all
        nonlocal read, last_read
        while read < 48 * 1024:
            read += len(await hop.out_trio.recv(2048))
            last_read = trio.current_time()
            await trio.sleep(0.1)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_send, hop.feed_trio, os.urandom(8 << 20))
            nursery.start_soon(read_then_stop)
            started = trio.current_time()
            with pytest.raises(SendTimeout):
                await hop.run()
            failed = trio.current_time()
            nursery.cancel_scope.cancel()
    assert failed - started > 2 * SEND_TIMEOUT  # the steady reads kept the relay going...
    assert failed - last_read < SEND_TIMEOUT + 2  # ...and once they stopped, the timeout ran
    await hop.aclose()


async def test_a_closed_destination_is_a_closed_resource() -> None:
    hop = Hop()
    await hop.dst.aclose()
    await _send(hop.feed_trio, b"x")
    with trio.fail_after(10), pytest.raises(trio.ClosedResourceError):
        await hop.run()
    await hop.aclose()


async def test_a_source_always_ready_still_lets_other_tasks_run_between_chunks() -> None:
    # Everything is in the source's receive buffer before the relay starts, and the destination's
    # buffers take it all: no round of the relay has to wait, so each ends with a checkpoint.
    size = 2 << 20
    hop = Hop(out_rcvbuf=4 << 20, src_rcvbuf=4 << 20)
    hop.dst.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    payload = os.urandom(size)
    sender = threading.Thread(target=lambda: (hop.feed.setblocking(True), hop.feed.sendall(payload),
                                              hop.feed.shutdown(socket.SHUT_WR)))
    sender.start()
    await trio.to_thread.run_sync(sender.join)
    waiting = 0
    with trio.fail_after(10):
        while waiting < size:  # until the kernel holds all of it for the relay
            await trio.sleep(0.01)
            waiting = len(hop.src_socket.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    ticks = 0
    done = False

    async def tick() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        await trio.lowlevel.checkpoint()
        before = ticks
        await hop.run()
        done = True
    assert ticks - before >= size // RELAY_BUFFER_SIZE - 1
    assert await _receive(hop.out_trio, size) == payload
    await hop.aclose()

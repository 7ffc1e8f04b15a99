"""WebSocket tunnels through a real snakeway, plain TCP on both hops: megabytes of frames both
ways at once while every write blocks, either peer hanging up, a client that reads slowly then
not at all, an upstream that never reads, and a tunnel open when shutdown begins. Real time."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
import trio
import trio_websocket

from tests.e2e.test_websocket import echo_server
from tests.hostile.harness import (
    LOOPBACK,
    proxy_to,
    running,
    start_websocket_upstream,
    statuses,
    until_logged,
    write_config,
)

SEND_TIMEOUT = 1.0
WS_IDLE = 1.0
DRAIN = 2.0
# How late a timeout may be seen: the scheduler, two busy cores.
SLACK = 3.0
UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
MASK = b"\x5a\xa5\x3c\xc3"


def frame(payload: bytes, *, masked: bool) -> bytes:
    """A final binary frame (a client's is masked, RFC 6455 §5.2)."""
    head = b"\x82" + bytes([0xFF if masked else 0x7F]) + len(payload).to_bytes(8, "big")
    if not masked:
        return head + payload
    key = (MASK * (len(payload) // 4 + 1))[: len(payload)]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(len(payload), "big")
    return head + MASK + body


async def open_tunnel(port: int, *, rcvbuf: int | None = None) -> trio.SocketStream:
    """A client connection upgraded through snakeway (the 101 read, nothing after it)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect((LOOPBACK, port))
    stream = trio.SocketStream(sock)
    await stream.send_all(UPGRADE)
    head = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(1)  # not a byte past the head
    assert statuses(head) == [101], head
    return stream


async def receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(1 << 16)
        assert chunk, f"end of stream after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


async def receive_to_end(stream: trio.SocketStream) -> bytes:
    data = bytearray()
    try:
        while chunk := await stream.receive_some(1 << 16):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return bytes(data)


def tunnel_config(tmp_path: Path, upstream: int, *, idle: float = 3600, server: str = "") -> tuple[Path, int]:
    return write_config(
        tmp_path,
        proxy_to(upstream, "/ws", extra=f", enable_websocket = true, ws_idle_timeout_seconds = {idle}"),
        server=server,
        workers=1,
    )


async def test_megabytes_of_frames_both_ways_at_once_arrive_byte_exact(nursery: trio.Nursery, tmp_path: Path) -> None:
    to_upstream = frame(os.urandom(6 << 20), masked=True)
    to_client = frame(os.urandom(7 << 20), masked=False)
    upstream_got: list[bytes] = []

    async def talk(stream: trio.SocketStream) -> None:
        async def read_late() -> None:
            await trio.sleep(0.5)  # the buffers fill first, so both of snakeway's writes block
            upstream_got.append(await receive_exactly(stream, len(to_upstream)))

        async with trio.open_nursery() as inner:
            inner.start_soon(read_late)
            await stream.send_all(to_client)
        await trio.sleep_forever()

    upstream, _ = await start_websocket_upstream(nursery, talk)
    config, port = tunnel_config(tmp_path, upstream)
    async with running(config, workers=1):
        client_got: list[bytes] = []
        stream = await open_tunnel(port)
        async with stream:

            async def read_late() -> None:
                await trio.sleep(0.5)
                client_got.append(await receive_exactly(stream, len(to_client)))

            with trio.fail_after(60):
                async with trio.open_nursery() as inner:
                    inner.start_soon(read_late)
                    await stream.send_all(to_upstream)
                while not upstream_got:
                    await trio.sleep(0.05)
    assert client_got[0] == to_client
    assert upstream_got[0] == to_upstream


async def test_an_upstream_that_hangs_up_ends_the_tunnel_after_its_last_bytes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    last_words = frame(os.urandom(3 << 20), masked=False) + b"\x88\x02\x03\xe8"  # and a close frame

    async def say_and_go(stream: trio.SocketStream) -> None:
        await stream.send_all(last_words)
        await stream.aclose()

    upstream, _ = await start_websocket_upstream(nursery, say_and_go)
    config, port = tunnel_config(tmp_path, upstream)
    async with running(config, workers=1):
        stream = await open_tunnel(port)
        async with stream:
            with trio.fail_after(20):
                assert await receive_to_end(stream) == last_words


async def test_a_client_that_hangs_up_ends_the_tunnel_after_its_last_bytes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    got: list[bytes] = []

    async def listen(stream: trio.SocketStream) -> None:
        got.append(await receive_to_end(stream))

    upstream, _ = await start_websocket_upstream(nursery, listen)
    config, port = tunnel_config(tmp_path, upstream)
    last_words = frame(os.urandom(3 << 20), masked=True) + b"\x88\x82" + MASK + b"\x59\x4d"
    async with running(config, workers=1):
        stream = await open_tunnel(port)
        async with stream:
            await stream.send_all(last_words)
        with trio.fail_after(20):
            while not got:
                await trio.sleep(0.05)
    assert got == [last_words]


async def test_a_client_reading_steadily_is_served_then_cut_within_the_send_timeout_once_it_stops(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async def flood(stream: trio.SocketStream) -> None:
        while True:
            await stream.send_all(frame(b"w" * 0x4000, masked=False))

    upstream, broken = await start_websocket_upstream(nursery, flood)
    config, port = tunnel_config(tmp_path, upstream, server=f"client = {{ send_timeout_seconds = {SEND_TIMEOUT} }}")
    async with running(config, workers=1):
        stream = await open_tunnel(port, rcvbuf=4096)
        async with stream:
            started = trio.current_time()
            read = 0
            while trio.current_time() - started < 3 * SEND_TIMEOUT:  # about 20 KiB/s: never cut
                chunk = await stream.receive_some(2048)
                assert chunk, "cut while reading steadily"
                read += len(chunk)
                await trio.sleep(0.1)
            assert not broken
            stopped = trio.current_time()  # from here on the client reads nothing
            with trio.fail_after(SEND_TIMEOUT + SLACK):
                while not broken:
                    await trio.sleep(0.05)
            assert broken[0] - stopped >= SEND_TIMEOUT * 0.9
            with trio.fail_after(10):
                await receive_to_end(stream)  # what was in flight, then the end
    assert read > 3 * SEND_TIMEOUT * 10 * 1024


async def test_bytes_pushed_at_an_upstream_that_never_reads_do_not_keep_the_tunnel_open(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async def never_read(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    upstream, _ = await start_websocket_upstream(nursery, never_read)
    config, port = tunnel_config(tmp_path, upstream, idle=WS_IDLE)
    async with running(config, workers=1) as proc:
        stream = await open_tunnel(port)
        async with stream:
            with trio.move_on_after(WS_IDLE + 2 * SLACK) as push:
                try:
                    while True:  # accepted by the kernels until snakeway's write upstream blocks
                        await stream.send_all(frame(b"p" * 0x4000, masked=True))
                except trio.BrokenResourceError:
                    pass
            assert not push.cancelled_caught, "snakeway kept the tunnel open"
            with trio.fail_after(5):
                assert await receive_to_end(stream) == b""
        await until_logged(proc, b"without traffic")


async def test_a_tunnel_open_at_shutdown_works_through_the_drain_and_is_closed_at_its_end(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await nursery.start(trio_websocket.serve_websocket, echo_server, LOOPBACK, 0, None)
    config, port = tunnel_config(tmp_path, server.port, server=f"shutdown = {{ drain_seconds = {DRAIN} }}")
    async with running(config, workers=1) as proc:
        async with trio_websocket.open_websocket(LOOPBACK, port, "/ws", use_ssl=False) as ws:
            proc.process.send_signal(signal.SIGTERM)
            await until_logged(proc, b"shutting down")
            asked = trio.current_time()
            await ws.send_message("still open")
            assert await ws.get_message() == "still open"
            with trio.fail_after(DRAIN + SLACK), pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
            assert trio.current_time() - asked >= DRAIN * 0.8
        with trio.fail_after(SLACK):
            assert await proc.process.wait() == 0

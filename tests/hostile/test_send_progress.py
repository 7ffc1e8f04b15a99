"""The send timeout counts from a write's last progress, not from its start.

A client that reads slowly but steadily gets a response of any size, each
write of which takes longer than the send timeout, and longer than the
upstream's read timeout too (a relayed response's writes are not timed by the
upstream's deadlines); a WebSocket client that stops reading is cut off
within the send timeout. (Clients that stop reading a static or relayed
response: test_slow_clients.py.) Real time, short timeouts.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import h11
import trio

from tests.hostile.harness import (
    LOOPBACK,
    proxy_to,
    running,
    start_logging_upstream,
    start_websocket_upstream,
    statuses,
    until_logged,
    write_config,
)

SEND_TIMEOUT = 1.0
READ_TIMEOUT = 1.0  # the upstream's
# One write's worth (a static file's chunk, about a read of a relayed body): at the steady
# rate below it takes some three send timeouts to arrive.
BODY = 64 * 1024
# How late a timeout may be seen: the scheduler, two busy cores.
SLACK = 3.0


async def read_steadily(port: int, request: bytes) -> tuple[bytes, float]:
    """``request`` from a client with a small receive buffer that reads 2 KiB every 0.1 s (about
    20 KiB/s, so that the kernel takes bytes from snakeway every few tenths of a second) until
    the response ends. Returns (the response, how long it took)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((LOOPBACK, port))
    stream = trio.SocketStream(sock)
    conn = h11.Connection(h11.CLIENT)
    out = bytearray()
    started = trio.current_time()
    async with stream:
        await stream.send_all(request)
        with trio.fail_after(BODY / 10_000 + 10):
            try:
                while type(event := conn.next_event()) not in (h11.EndOfMessage, h11.ConnectionClosed):
                    if event is h11.NEED_DATA:
                        chunk = await stream.receive_some(2048)
                        out += chunk
                        conn.receive_data(chunk)
                        await trio.sleep(0.1)
            except (h11.RemoteProtocolError, trio.BrokenResourceError):  # cut: the caller compares what came
                pass
    return bytes(out), trio.current_time() - started


async def start_paced_upstream(nursery: trio.Nursery, body: bytes, parts: int = 3) -> int:
    """An upstream that sends ``body`` in ``parts``, 0.3 s apart: the proxy relays it in as many
    rounds, each a write of its own to the client. Returns its port."""

    async def serve(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
        step = len(body) // parts
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), step):
            await stream.send_all(body[start:start + step])
            await trio.sleep(0.3)
        await stream.receive_some(4096)  # until the proxy closes or reuses the connection

    listeners = await nursery.start(trio.serve_tcp, serve, 0)
    return listeners[0].socket.getsockname()[1]


def body_of(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


def access_lines(log: bytes, target: bytes, status: int) -> int:
    return len(re.findall(rb'"GET ' + re.escape(target) + rb" HTTP/1\.1\" " + str(status).encode(), log))


async def test_steady_slow_readers_get_whole_static_and_relayed_responses(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    relayed = os.urandom(BODY)
    upstream, _ = await start_logging_upstream(nursery, body=relayed)
    paced_body = os.urandom(BODY)
    paced = await start_paced_upstream(nursery, paced_body)
    site = tmp_path / "site"
    site.mkdir()
    static = os.urandom(BODY)
    (site / "file.bin").write_bytes(static)
    config, port = write_config(
        tmp_path,
        f"""
  services = [
    {{ name = "app", routes = [{{ hosts = ["*"], path = "/app" }}],
      upstreams = [{{ endpoint = {{ host = "{LOOPBACK}", port = {upstream} }} }}] }},
    {{ name = "paced", routes = [{{ hosts = ["*"], path = "/paced" }}],
      upstreams = [{{ endpoint = {{ host = "{LOOPBACK}", port = {paced} }} }}] }},
  ]
"""
        + f'static_files = [{{ routes = [{{ hosts = ["*"], path = "/", file_dir = "{site}" }}] }}]',
        server=f"client = {{ send_timeout_seconds = {SEND_TIMEOUT} }}\n"
        f"upstream = {{ read_timeout_seconds = {READ_TIMEOUT} }}",
        workers=1,
    )
    async with running(config, workers=1) as proc:
        results: dict[bytes, tuple[bytes, float]] = {}

        async def fetch(target: bytes) -> None:
            results[target] = await read_steadily(port, b"GET " + target + b" HTTP/1.1\r\nHost: x.test\r\n\r\n")

        async with trio.open_nursery() as clients:
            clients.start_soon(fetch, b"/file.bin")
            clients.start_soon(fetch, b"/app/big")
            clients.start_soon(fetch, b"/paced/big")
        for target, expected in [(b"/file.bin", static), (b"/app/big", relayed), (b"/paced/big", paced_body)]:
            response, took = results[target]
            assert statuses(response) == [200], response[:200]
            assert body_of(response) == expected, (target, len(body_of(response)))
            # Longer than a whole-write limit of the send timeout (or the upstream's read
            # timeout) would have allowed the write, or one of the writes, the response took.
            assert took > 2 * SEND_TIMEOUT, (target, took)
            await until_logged(proc, b'"GET ' + target + b' HTTP/1.1" 200')
        assert access_lines(proc.log, b"/file.bin", 499) == access_lines(proc.log, b"/app/big", 499) == 0


async def flooding_websocket(nursery: trio.Nursery) -> tuple[int, list[float]]:
    """An upstream that accepts any upgrade, then sends bytes as fast as they are taken. Returns
    (its port, when each of its connections failed: snakeway closed it)."""

    async def flood(stream: trio.SocketStream) -> None:
        while True:
            await stream.send_all(b"\x82\x7e\x40\x00" + b"w" * 0x4000)  # binary frames of 16 KiB

    return await start_websocket_upstream(nursery, flood)


async def test_a_websocket_client_that_stops_reading_is_cut_after_the_send_timeout(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, closed = await flooding_websocket(nursery)
    config, port = write_config(
        tmp_path,
        proxy_to(upstream, "/ws", extra=", enable_websocket = true, ws_idle_timeout_seconds = 3600"),
        server=f"client = {{ send_timeout_seconds = {SEND_TIMEOUT} }}",
        workers=1,
    )
    async with running(config, workers=1):
        stream = await trio.open_tcp_stream(LOOPBACK, port)
        async with stream:
            await stream.send_all(
                b"GET /ws HTTP/1.1\r\nHost: x.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            first = await stream.receive_some(4096)
            assert statuses(first) == [101], first[:200]
            stopped = trio.current_time()  # from here on the client reads nothing
            with trio.fail_after(SEND_TIMEOUT + SLACK):
                while not closed:
                    await trio.sleep(0.05)
            assert closed[0] - stopped >= SEND_TIMEOUT * 0.9
            # What was in flight can still be read, then the connection ends.
            with trio.fail_after(10):
                try:
                    while await stream.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass

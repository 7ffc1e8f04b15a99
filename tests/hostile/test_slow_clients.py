"""Slow and idle clients: what they may hold, and for how long.

A client that stops reading a response is dropped after the send timeout,
whether the response is a static file or relayed; one that trickles a
request body holds no upstream connection while it does, and is answered 408
after the body timeout.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
import trio
import trio_websocket

from tests.e2e.test_websocket import echo_server
from tests.hostile.harness import (
    LOOPBACK,
    exchange,
    proxy_to,
    running,
    start_logging_upstream,
    statuses,
    write_config,
)

SEND_TIMEOUT = 1.5
BODY_TIMEOUT = 2.0
# How late a timeout may be seen: the lazy deadline, the scheduler, two busy cores.
SLACK = 3.0
BIG = 4 * 1024 * 1024
WS_IDLE = 1.0


async def open_slow_client(port: int, request: bytes) -> trio.SocketStream:
    """A connection with a tiny receive buffer, so that the server's writes block soon."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((LOOPBACK, port))
    stream = trio.SocketStream(sock)
    await stream.send_all(request)
    return stream


async def read_slowly(stream: trio.SocketStream) -> None:
    """16 bytes twice a second."""
    while await stream.receive_some(16):
        await trio.sleep(0.5)


async def read_rest(stream: trio.SocketStream) -> int:
    """Everything still in flight, fast, until the server's close: the byte count."""
    total = 0
    with trio.fail_after(10):
        try:
            while chunk := await stream.receive_some(65536):
                total += len(chunk)
        except trio.BrokenResourceError:
            pass
    return total


def access_lines(log: bytes, target: bytes, status: int) -> int:
    return len(re.findall(rb'"GET ' + re.escape(target) + rb" HTTP/1\.1\" " + str(status).encode(), log))


def open_handles(pid: int, path: Path) -> int:
    """Descriptors open on ``path`` in process ``pid`` and its descendants."""
    count, pids = 0, [pid]
    while pids:
        p = pids.pop()
        for fd in os.listdir(f"/proc/{p}/fd"):
            try:
                count += os.readlink(f"/proc/{p}/fd/{fd}") == str(path)
            except OSError:
                pass
        for task in os.listdir(f"/proc/{p}/task"):
            with open(f"/proc/{p}/task/{task}/children") as children:
                pids += [int(c) for c in children.read().split()]
    return count


async def hold_slow_readers(port: int, target: bytes, proc, *, still: int = 3, slow: int = 3) -> list[int]:  # type: ignore[no-untyped-def]
    """Clients that read nothing (``still``) or 32 bytes/s (``slow``) of ``target``.

    Checks that snakeway answers others while they are held, and that every one
    is closed (its 499 logged) within the send timeout plus slack. Returns the
    bytes each could read once it was closed.
    """
    request = b"GET " + target + b" HTTP/1.1\r\nHost: x.test\r\n\r\n"
    stills = [await open_slow_client(port, request) for _ in range(still)]
    slows = [await open_slow_client(port, request) for _ in range(slow)]
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for stream in slows:
            nursery.start_soon(read_slowly, stream)
        # Others are served meanwhile.
        assert statuses(await exchange(port, b"GET /small.txt HTTP/1.1\r\nHost: x.test\r\n\r\n")) == [200]
        with trio.fail_after(SEND_TIMEOUT + SLACK):
            while access_lines(proc.log, target, 499) < still + slow:
                await proc.read_more()
        closed_after = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert closed_after >= SEND_TIMEOUT * 0.9
    read = [await read_rest(stream) for stream in stills + slows]
    for stream in stills + slows:
        await stream.aclose()
    return read


async def test_static_file_readers_that_stall_are_closed_after_the_send_timeout(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    big = site / "big.bin"
    big.write_bytes(os.urandom(BIG))
    (site / "small.txt").write_bytes(b"small file\n")
    config, port = write_config(
        tmp_path,
        f'static_files = [{{ routes = [{{ hosts = ["*"], path = "/", file_dir = "{site}" }}] }}]',
        server=f"client = {{ send_timeout_seconds = {SEND_TIMEOUT} }}",
    )
    async with running(config) as proc:
        read = await hold_slow_readers(port, b"/big.bin", proc)
        # What a client that stopped reading gets is cut short: the response was not completed.
        assert all(n < BIG for n in read), read
        # The file is closed with the connection.
        with trio.fail_after(5):
            while open_handles(proc.process.pid, big):
                await trio.sleep(0.1)
        answer = await exchange(port, b"GET /small.txt HTTP/1.1\r\nHost: x.test\r\n\r\n")
        assert statuses(answer) == [200] and answer.endswith(b"small file\n")


async def test_relayed_response_readers_that_stall_are_closed_after_the_send_timeout(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, _ = await start_logging_upstream(nursery, body=b"x" * BIG)
    site = tmp_path / "site"
    site.mkdir()
    (site / "small.txt").write_bytes(b"small file\n")
    config, port = write_config(
        tmp_path,
        proxy_to(upstream, "/app")
        + f'static_files = [{{ routes = [{{ hosts = ["*"], path = "/", file_dir = "{site}" }}] }}]',
        server=f"client = {{ send_timeout_seconds = {SEND_TIMEOUT} }}",
    )
    async with running(config) as proc:
        read = await hold_slow_readers(port, b"/app/big", proc)
        assert all(n < BIG for n in read), read


async def trickle(port: int, head: bytes, drops: list[bytes], answers: list[tuple[bytes, float]]) -> None:
    """Send ``head``, then each of ``drops`` half a second apart; record the answer and when it came."""
    stream = await trio.open_tcp_stream(LOOPBACK, port)
    try:
        await stream.send_all(head)
        for drop in drops:
            await trio.sleep(0.5)
            await stream.send_all(drop)
        last = trio.current_time()
        answer = bytearray()
        with trio.fail_after(BODY_TIMEOUT + SLACK):
            try:
                while chunk := await stream.receive_some(65536):
                    answer += chunk
            except trio.BrokenResourceError:
                pass
        answers.append((bytes(answer), trio.current_time() - last))
    finally:
        await stream.aclose()


async def test_request_bodies_trickled_in_hold_no_upstream_connection_and_get_408(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(
        tmp_path, proxy_to(upstream), server=f"client = {{ body_timeout_seconds = {BODY_TIMEOUT} }}"
    )
    sized = b"POST /sized HTTP/1.1\r\nHost: x.test\r\nContent-Length: 50\r\n\r\n"
    chunked = b"POST /chunked HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    answers: list[tuple[bytes, float]] = []
    async with running(config):
        async with trio.open_nursery() as clients:
            for _ in range(4):
                clients.start_soon(trickle, port, sized, [b"a"] * 6, answers)
            for _ in range(2):
                clients.start_soon(trickle, port, chunked, [b"10\r\n", b"0123", b"4567"], answers)
            # While they trickle, and after they stop until they are answered, the
            # upstream has not been connected to.
            while len(answers) < 6:
                assert log.connections == [] and log.open_connections == 0
                await trio.sleep(0.1)
        for answer, waited in answers:
            assert statuses(answer) == [408], answer
            assert b"connection: close" in answer.lower()
            assert waited >= BODY_TIMEOUT * 0.9
        assert log.connections == []
        # A body sent at once still arrives whole, whatever its framing and size.
        small = bytes(range(256)) * 4
        big = os.urandom(300 * 1024)
        for body, head in [
            (small, b"POST /small HTTP/1.1\r\nHost: x.test\r\nContent-Length: 1024\r\n\r\n"),
            (small, b"POST /small-chunked HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n"),
            (big, b"POST /big HTTP/1.1\r\nHost: x.test\r\nContent-Length: %d\r\n\r\n" % len(big)),
            (big, b"POST /big-chunked HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ]:
            framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if b"chunked" in head else body
            answer = await exchange(port, head + framed, timeout=10)
            assert statuses(answer) == [200], answer[:200]
            assert log.requests[-1].body == body
        assert [r.target for r in log.requests] == [b"/small", b"/small-chunked", b"/big", b"/big-chunked"]


async def test_small_bodies_keep_100_continue_and_the_body_limit(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream, extra=", max_body_bytes = 100"))
    async with running(config):
        # Expect: 100-continue: the client hears 100 before it sends the body.
        stream = await trio.open_tcp_stream(LOOPBACK, port)
        with trio.fail_after(5):
            await stream.send_all(
                b"POST /expect HTTP/1.1\r\nHost: x.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            first = await stream.receive_some(65536)
            assert first.startswith(b"HTTP/1.1 100 Continue\r\n"), first
            await stream.send_all(b"hello")
            answer = bytearray()
            while b"upstream saw /expect" not in answer:
                answer += await stream.receive_some(65536)
        await stream.aclose()
        assert statuses(bytes(answer)) == [200]
        assert log.requests[-1].body == b"hello"
        # Over max_body_bytes: by its Content-Length (before 100 Continue), or chunked, as it arrives.
        over = await exchange(
            port, b"POST /over HTTP/1.1\r\nHost: x.test\r\nContent-Length: 101\r\nExpect: 100-continue\r\n\r\n"
        )
        assert statuses(over) == [413], over
        chunk = b"x" * 60
        chunked = await exchange(
            port,
            b"POST /over-chunked HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"3c\r\n" + chunk + b"\r\n") * 2 + b"0\r\n\r\n",
        )
        assert statuses(chunked) == [413], chunked
        assert [r.target for r in log.requests] == [b"/expect"]


async def test_an_idle_websocket_is_closed_after_ws_idle_timeout(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await nursery.start(trio_websocket.serve_websocket, echo_server, LOOPBACK, 0, None)
    config, port = write_config(
        tmp_path,
        proxy_to(server.port, "/ws", extra=f", enable_websocket = true, ws_idle_timeout_seconds = {WS_IDLE}"),
    )
    async with running(config):
        async with trio_websocket.open_websocket(LOOPBACK, port, "/ws", use_ssl=False) as ws:
            # Messages more often than the idle timeout keep the tunnel open well past it.
            for n in range(8):
                await trio.sleep(WS_IDLE * 0.4)
                await ws.send_message(f"message {n}")
                assert await ws.get_message() == f"message {n}"
            quiet_since = trio.current_time()
            with trio.fail_after(WS_IDLE + SLACK), pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
            assert trio.current_time() - quiet_since >= WS_IDLE * 0.9


async def test_an_upgrade_request_whose_body_never_comes_gets_408(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await nursery.start(trio_websocket.serve_websocket, echo_server, LOOPBACK, 0, None)
    config, port = write_config(
        tmp_path,
        proxy_to(server.port, "/ws", extra=", enable_websocket = true"),
        server=f"client = {{ body_timeout_seconds = {BODY_TIMEOUT} }}",
    )
    async with running(config):
        answers: list[tuple[bytes, float]] = []
        head = (
            b"GET /ws HTTP/1.1\r\nHost: x.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 5\r\n\r\n"
        )
        await trickle(port, head, [], answers)
    [(answer, waited)] = answers
    assert statuses(answer) == [408], answer
    assert waited >= BODY_TIMEOUT * 0.9

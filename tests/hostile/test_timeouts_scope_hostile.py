"""Timeouts and shutdown as a client of a running snakeway sees them.

A connection's waits share one deadline: whichever passes, the client hears
what it owes (a 408, a 504) once, and the connection closes. Shutdown closes a
connection waiting for its next request at once, and lets one with a request
in flight finish it.
"""

from __future__ import annotations

import signal
from functools import partial
from pathlib import Path

import trio

from tests.hostile.harness import (
    LOOPBACK,
    exchange,
    proxy_to,
    running,
    start_logging_upstream,
    statuses,
    until_logged,
    write_config,
)

TIMEOUT = 1.0
# How late a timeout may be seen on a busy machine; never early.
SLACK = 4.0


async def read_until_closed(stream: trio.SocketStream, timeout: float) -> bytes:
    out = bytearray()
    with trio.fail_after(timeout):
        try:
            while chunk := await stream.receive_some(65536):
                out += chunk
        except trio.BrokenResourceError:
            pass
    return bytes(out)


async def test_a_head_sent_a_byte_at_a_time_gets_408_the_header_timeout_after_its_first_byte(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, log = await start_logging_upstream(nursery)
    config, port = write_config(
        tmp_path, proxy_to(upstream), server=f"client = {{ header_timeout_seconds = {TIMEOUT} }}"
    )
    async with running(config):
        stream = await trio.open_tcp_stream(LOOPBACK, port)
        async with stream:
            first = trio.current_time()
            try:
                for byte in b"GET / HTTP/1.1\r\nHost: x.test\r\nX-Slow: ":
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(0.1)
            except trio.BrokenResourceError:
                pass  # closed while still sending: the answer is read below
            answer = await read_until_closed(stream, TIMEOUT + SLACK)
            waited = trio.current_time() - first
    assert statuses(answer) == [408], answer
    assert b"connection: close" in answer.lower()
    assert waited >= TIMEOUT
    assert log.connections == []


async def test_a_silent_upstream_gets_one_504_and_the_connection_closes(nursery: trio.Nursery, tmp_path: Path) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        while await stream.receive_some(65536):
            pass

    (listener,) = await nursery.start(partial(trio.serve_tcp, silent, 0, host=LOOPBACK))
    config, port = write_config(
        tmp_path, proxy_to(listener.socket.getsockname()[1]),
        server=f"upstream = {{ read_timeout_seconds = {TIMEOUT} }}",
    )
    async with running(config):
        started = trio.current_time()
        # Two requests in one write: the second is never read, as the connection ends with the first.
        request = b"GET /a HTTP/1.1\r\nHost: x.test\r\n\r\n"
        answer = await exchange(port, request * 2, timeout=TIMEOUT + SLACK, linger=TIMEOUT + SLACK)
        waited = trio.current_time() - started
    assert statuses(answer) == [504], answer
    assert b"connection: close" in answer.lower()
    assert waited >= TIMEOUT


async def test_shutdown_closes_a_kept_alive_connection_at_once_and_lets_a_request_in_flight_finish(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    arrived, release = trio.Event(), trio.Event()

    async def held(stream: trio.SocketStream) -> None:
        """Answers /fast at once, /held once the test releases it."""
        buffer = b""
        while chunk := await stream.receive_some(65536):
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                if head.startswith(b"GET /held "):
                    arrived.set()
                    await release.wait()
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")

    (listener,) = await nursery.start(partial(trio.serve_tcp, held, 0, host=LOOPBACK))
    config, port = write_config(tmp_path, proxy_to(listener.socket.getsockname()[1]), workers=1)
    async with running(config, workers=1) as proc:
        idle = await trio.open_tcp_stream(LOOPBACK, port)
        busy = await trio.open_tcp_stream(LOOPBACK, port)
        async with idle, busy:
            await idle.send_all(b"GET /fast HTTP/1.1\r\nHost: x.test\r\n\r\n")
            with trio.fail_after(SLACK):
                first = b""
                while not first.endswith(b"done"):
                    first += await idle.receive_some(65536)
                await busy.send_all(b"GET /held HTTP/1.1\r\nHost: x.test\r\n\r\n")
                await arrived.wait()
            proc.process.send_signal(signal.SIGTERM)
            await until_logged(proc, b"shutting down", 1)
            # The kept-alive connection is closed while the held request is still in flight.
            assert await read_until_closed(idle, SLACK) == b""
            release.set()
            answer = await read_until_closed(busy, SLACK)
    assert statuses(answer) == [200] and answer.endswith(b"done")

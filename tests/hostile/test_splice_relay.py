"""Long response bodies relayed between two plain-TCP hops (the kernel splices them), through a real snakeway.

What a client sees must not depend on how the body travelled: every byte,
in order, on a connection that carries the next request; a connection
closed before Content-Length bytes when the upstream ends early or stalls;
the send timeout for a client that stops reading; and nothing the upstream
sends past a body reaching the next request. Nor may descriptors pile up in
the worker, whatever happened to the responses.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h11
import trio

from tests.hostile.harness import LOOPBACK, proxy_to, running, until_logged, write_config
from tests.proc import Running

BIG = 3 * 1024 * 1024 + 11  # more than the socket buffers hold: many rounds of splicing
BODY = os.urandom(BIG)
MEDIUM = 768 * 1024
SEND_TIMEOUT = 1.5
READ_TIMEOUT = 1.5
SLACK = 3.0  # the lazy deadline, the scheduler, two busy cores
SETTINGS = (
    f"client = {{ send_timeout_seconds = {SEND_TIMEOUT} }}\n  upstream = {{ read_timeout_seconds = {READ_TIMEOUT} }}"
)


def big_head(length: int = BIG) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length


@dataclass
class UpstreamLog:
    """Per request: (upstream connection number, target); and the connections still open."""

    requests: list[tuple[int, bytes]] = field(default_factory=list)
    connections: int = 0
    open: int = 0
    go_on: trio.Event = field(default_factory=trio.Event)


async def start_upstream(nursery: trio.Nursery) -> tuple[int, UpstreamLog]:
    """An upstream whose answer depends on the target:

    ``/big``: ``BODY`` with its Content-Length; ``/medium``: its first ``MEDIUM`` bytes; ``/paced``: the same,
    the last two thirds once ``log.go_on`` is set; ``/small``: ``small``; ``/cut``: half of ``BODY``, then
    the close; ``/stall``: half of ``BODY``, then nothing until the close; ``/extra``: ``BODY`` followed, in the same
    write, by a second response nobody asked for.
    """
    log = UpstreamLog()

    async def serve(stream: trio.SocketStream) -> None:
        number = log.connections
        log.connections += 1
        log.open += 1
        buffered = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffered:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffered += data
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                target = head.split(b" ", 2)[1]
                log.requests.append((number, target))
                if target == b"/big":
                    await stream.send_all(big_head() + BODY)
                elif target == b"/medium":
                    await stream.send_all(big_head(MEDIUM) + BODY[:MEDIUM])
                elif target == b"/paced":
                    await stream.send_all(big_head(MEDIUM) + BODY[: MEDIUM // 3])
                    await log.go_on.wait()
                    await stream.send_all(BODY[MEDIUM // 3 : MEDIUM])
                elif target == b"/small":
                    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall")
                elif target == b"/cut":
                    await stream.send_all(big_head() + BODY[: BIG // 2])
                    return
                elif target == b"/stall":
                    await stream.send_all(big_head() + BODY[: BIG // 2])
                    while await stream.receive_some(65536):  # silent until snakeway closes the connection
                        pass
                    return
                elif target == b"/extra":
                    await stream.send_all(big_head() + BODY + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
        except trio.BrokenResourceError:
            return
        finally:
            log.open -= 1
            await trio.aclose_forcefully(stream)

    listeners = await nursery.start(trio.serve_tcp, serve, 0)
    return listeners[0].socket.getsockname()[1], log


async def all_closed(log: UpstreamLog) -> None:
    """Until snakeway closed every upstream connection (none is left pooled)."""
    with trio.fail_after(5):
        while log.open:
            await trio.sleep(0.05)


@asynccontextmanager
async def spliced_proxy(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[tuple[int, UpstreamLog, Running]]:
    """snakeway (two workers, :data:`SETTINGS`) in front of a fresh :func:`start_upstream`: its port, the
    upstream's log and the process, until the block ends."""
    upstream, log = await start_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream), server=SETTINGS)
    async with running(config) as proc:
        yield port, log, proc


class Client:
    """One kept-alive client connection, reading responses with h11."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.received = 0  # bytes read on the connection

    @classmethod
    async def open(cls, port: int, *, rcvbuf: int | None = None) -> Client:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((LOOPBACK, port))
        return cls(trio.SocketStream(sock))

    async def send(self, target: bytes) -> None:
        await self.stream.send_all(b"GET " + target + b" HTTP/1.1\r\nHost: x.test\r\n\r\n")

    async def get(self, target: bytes, timeout: float = 10) -> tuple[int, bytes, bool]:
        """(status, body, whether the response ended cleanly); False: the connection closed first."""
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        self.conn.send(h11.Request(method=b"GET", target=target, headers=[(b"host", b"x.test")]))
        self.conn.send(h11.EndOfMessage())
        await self.send(target)
        status, body = 0, bytearray()
        with trio.fail_after(timeout):
            while True:
                try:
                    event = self.conn.next_event()
                except h11.RemoteProtocolError:  # closed before the end of the body
                    return status, bytes(body), False
                if event is h11.NEED_DATA:
                    try:
                        data = await self.stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        data = b""
                    self.received += len(data)
                    self.conn.receive_data(data)
                    continue
                if type(event) is h11.Response:
                    status = event.status_code
                elif type(event) is h11.Data:
                    body += event.data
                elif type(event) is h11.EndOfMessage:
                    return status, bytes(body), True
                else:
                    return status, bytes(body), False

    async def aclose(self) -> None:
        await self.stream.aclose()


async def fetch(port: int, target: bytes, timeout: float = 10) -> tuple[int, bytes, bool]:
    """:meth:`Client.get` on a connection of its own."""
    client = await Client.open(port)
    try:
        return await client.get(target, timeout)
    finally:
        await client.aclose()


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in os.listdir(f"/proc/{p}/task"):
            with open(f"/proc/{p}/task/{task}/children") as children:
                todo += [int(c) for c in children.read().split()]
    return out


def descriptors(pid: int) -> list[str]:
    """What every descriptor of ``pid`` and its descendants points at (``socket:[…]``, ``pipe:[…]``, paths)."""
    out = []
    for p in descendants(pid):
        for fd in os.listdir(f"/proc/{p}/fd"):
            try:
                out.append(os.readlink(f"/proc/{p}/fd/{fd}"))
            except OSError:
                pass
    return out


def kinds(links: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for link in links:
        kind = re.sub(r"\[\d+\]$", "", link)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


async def settled(pid: int, expected: dict[str, int], timeout: float = 10) -> dict[str, int]:
    """The descriptor kinds of the tree once they equal ``expected``, or what they are after ``timeout``."""
    with trio.move_on_after(timeout):
        while kinds(descriptors(pid)) != expected:
            await trio.sleep(0.1)
    return kinds(descriptors(pid))


async def test_big_bodies_arrive_byte_exact_and_both_connections_carry_the_next_request(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with spliced_proxy(nursery, tmp_path) as (port, log, proc):
        client = await Client.open(port)
        sizes = []
        try:
            for _ in range(3):
                received = client.received
                assert await client.get(b"/big") == (200, BODY, True)
                sizes.append(client.received - received)  # one response at a time: all of it, and only it
            assert await client.get(b"/small") == (200, b"small", True)
        finally:
            await client.aclose()
        # One client connection, one upstream connection, reused for every request.
        assert log.requests == [(0, b"/big")] * 3 + [(0, b"/small")]
        await until_logged(proc, b'"GET /small HTTP/1.1" 200')
        # The access log counts the bytes the client got: the head and every byte of each body.
        logged = re.findall(rb'"GET /big HTTP/1\.1" 200 (\d+) ', proc.log)
        assert [int(n) for n in logged] == sizes


async def test_an_upstream_that_closes_mid_body_closes_the_client_connection(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with spliced_proxy(nursery, tmp_path) as (port, log, proc):
        status, body, clean = await fetch(port, b"/cut")
        assert (status, clean) == (200, False)
        assert body == BODY[: len(body)] and len(body) < BIG  # what came, in order; then the close
        # The next client is served on a fresh upstream connection.
        assert await fetch(port, b"/big") == (200, BODY, True)
        assert log.requests[-1] == (1, b"/big")


async def test_an_upstream_that_stalls_mid_body_is_cut_by_the_read_timeout(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with spliced_proxy(nursery, tmp_path) as (port, log, proc):
        started = trio.current_time()
        status, body, clean = await fetch(port, b"/stall", timeout=READ_TIMEOUT + SLACK + 5)
        waited = trio.current_time() - started
        assert (status, clean) == (200, False)
        assert body == BODY[: BIG // 2]  # everything the upstream sent, then the close
        assert READ_TIMEOUT * 0.9 <= waited <= READ_TIMEOUT + SLACK
        await until_logged(proc, b'"GET /stall HTTP/1.1" 499')
        await all_closed(log)  # the stalled upstream connection is dropped, not pooled


async def test_a_client_that_stops_reading_is_cut_off_by_the_send_timeout(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with spliced_proxy(nursery, tmp_path) as (port, log, proc):
        client = await Client.open(port, rcvbuf=4096)
        try:
            await client.send(b"/big")
            started = trio.current_time()
            await until_logged(proc, b'"GET /big HTTP/1.1" 499', timeout=SEND_TIMEOUT + SLACK)
            assert trio.current_time() - started >= SEND_TIMEOUT * 0.9
            read = 0
            with trio.fail_after(10):
                try:
                    while chunk := await client.stream.receive_some(65536):
                        read += len(chunk)
                except trio.BrokenResourceError:
                    pass
            assert read < len(big_head()) + BIG  # closed before the end
        finally:
            await client.aclose()
        await all_closed(log)  # the upstream connection, half read, is dropped


async def test_a_client_that_reads_slowly_but_steadily_gets_the_whole_body_however_long_it_takes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with spliced_proxy(nursery, tmp_path) as (port, log, proc):
        for target in (b"/medium", b"/paced"):
            client = await Client.open(port, rcvbuf=4096)
            try:
                await client.send(target)
                started = trio.current_time()
                response = bytearray()
                with trio.fail_after(60):
                    while not (end := response.find(b"\r\n\r\n")) > 0 or len(response) < end + 4 + MEDIUM:
                        chunk = await client.stream.receive_some(4096)  # about 4 KiB every 20 ms at most
                        assert chunk, "closed before the end"
                        response += chunk
                        if target == b"/paced" and end > 0 and len(response) >= end + 4 + MEDIUM // 3:
                            # /paced: the upstream sends the rest only now, while snakeway waits for it.
                            log.go_on.set()
                        await trio.sleep(0.02)
                took = trio.current_time() - started
            finally:
                await client.aclose()
            assert response.endswith(BODY[:MEDIUM])
            # Longer than the send timeout or the upstream's read timeout would allow a write timed whole,
            # or a wait for the client timed by the wait for the upstream before it.
            assert took > 2 * max(SEND_TIMEOUT, READ_TIMEOUT), took
            await until_logged(proc, b'"GET ' + target + b' HTTP/1.1" 200')


async def test_bytes_past_the_content_length_never_reach_the_next_request(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, log = await start_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream), server=SETTINGS, workers=1)
    async with running(config, workers=1):
        client = await Client.open(port)
        try:
            for _ in range(3):
                assert await client.get(b"/extra") == (200, BODY, True)
                # Closed as the response ends, as a read body with bytes after it would be: not pooled.
                await all_closed(log)
                assert await client.get(b"/small") == (200, b"small", True)
        finally:
            await client.aclose()
    # A connection with bytes past the body was not reused: /extra is the last request of each it went on.
    for connection in range(log.connections):
        targets = [target for number, target in log.requests if number == connection]
        assert b"/extra" not in targets[:-1], targets
    assert log.connections == 4


async def test_no_descriptor_is_left_behind_by_spliced_responses_or_their_failures(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    upstream, log = await start_upstream(nursery)
    config, port = write_config(tmp_path, proxy_to(upstream), server=SETTINGS, workers=1)
    async with running(config, workers=1) as proc:
        pid = proc.process.pid
        before = kinds(descriptors(pid))
        assert await fetch(port, b"/big") == (200, BODY, True)
        # One kept-alive upstream connection, with the pipe its bodies are spliced through.
        after_one = dict(before)
        after_one["socket:"] = after_one.get("socket:", 0) + 1
        after_one["pipe:"] = after_one.get("pipe:", 0) + 2
        assert await settled(pid, after_one) == after_one

        for _ in range(20):
            client = await Client.open(port)
            try:
                assert await client.get(b"/big") == (200, BODY, True)
                assert await client.get(b"/big") == (200, BODY, True)
            finally:
                await client.aclose()
        assert await settled(pid, after_one) == after_one

        # Failures: the upstream ends early, stalls, the client stops reading or goes away.
        for target in (b"/cut", b"/stall", b"/cut"):
            assert (await fetch(port, target, timeout=READ_TIMEOUT + SLACK + 5))[2] is False
        for _ in range(2):
            client = await Client.open(port, rcvbuf=4096)
            await client.send(b"/big")
            await trio.sleep(0.3)
            await client.aclose()  # gone mid-body
        cut_off = proc.log.count(b'"GET /big HTTP/1.1" 499') + 1
        stopped = await Client.open(port, rcvbuf=4096)
        await stopped.send(b"/big")
        await until_logged(proc, b'"GET /big HTTP/1.1" 499', cut_off, timeout=SEND_TIMEOUT + SLACK + 5)
        await stopped.aclose()
        # Every failed exchange closed its upstream connection and its pipe: back to none pooled.
        assert await settled(pid, before) == before
        # And a new exchange pools one again.
        assert await fetch(port, b"/big") == (200, BODY, True)
        assert await settled(pid, after_one) == after_one

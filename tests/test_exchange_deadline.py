"""An exchange's deadline and the client's writes: lifted while the exchange writes to a slow client,
kept while it waits for the request body, whatever the client's transport writes meanwhile.

Real time over real 127.0.0.1 sockets to the client (the waits are the kernel's), short timeouts;
the upstream is a memory stream that takes every write at once.
"""

from __future__ import annotations

import os
import socket

import h11
import pytest
import trio
import trio.testing

from snakeway.config.model import Endpoint, UpstreamSettings
from snakeway.proxy.balance import Health
from snakeway.proxy.forward import ClientGone, Exchange, ForwardContext, RequestFailed
from snakeway.proxy.h11io import H11Stream, relayed_request
from snakeway.proxy.pool import UpstreamConnection, UpstreamPool
from snakeway.proxy.request_body import NO_BODY
from snakeway.tcp import TcpStream

LOOPBACK = "127.0.0.1"
BODY_TIMEOUT = 0.5
READ_TIMEOUT = 0.3  # the upstream's
# Far above the other timeouts: a wait that outlives them ends with this, a client gone.
SEND_TIMEOUT = 10 * BODY_TIMEOUT
SMALL_BUFFER = 4096


class WritesWhileReading(trio.abc.Stream):
    """A client transport that writes while it reads, as ``trio.SSLStream`` does with TLS records of
    its own (an alert, a key update): ``pending`` goes to the TCP stream under it before the next read."""

    def __init__(self, tcp: TcpStream) -> None:
        self.transport_stream = tcp
        self.pending = b""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.pending:
            data, self.pending = self.pending, b""
            await self.transport_stream.send_all(data)
        return await self.transport_stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.transport_stream.aclose()


async def client_pair() -> tuple[trio.SocketStream, TcpStream]:
    """A client whose kernel holds little of what is sent to it, and snakeway's end of its connection."""
    listener = (await trio.open_tcp_listeners(0, host=LOOPBACK))[0]
    async with listener:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        await sock.connect((LOOPBACK, listener.socket.getsockname()[1]))
        accepted = await listener.accept()
    tcp = TcpStream(accepted, send_timeout=SEND_TIMEOUT)
    tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    return trio.SocketStream(sock), tcp


def exchange_over(down: H11Stream, tcp: TcpStream, upstream: trio.abc.Stream) -> Exchange:
    down.tcp = tcp  # as Http1Connection sets it
    settings = UpstreamSettings(read_timeout_seconds=READ_TIMEOUT)
    ctx = ForwardContext(
        pool=UpstreamPool(settings), health=Health(1.0), settings=settings, client_ip=LOOPBACK,
        scheme="http", body_timeout=BODY_TIMEOUT, buffer_body=0,
    )
    conn = UpstreamConnection(Endpoint(LOOPBACK, 1), upstream, now=trio.current_time())
    return Exchange(down, conn, ctx, None)


async def test_a_transport_write_blocked_during_a_body_read_leaves_the_body_timeout_running() -> None:
    client, tcp = await client_pair()
    transport = WritesWhileReading(tcp)
    down = H11Stream(transport, h11.Connection(h11.SERVER))
    upstream, proxy_side = trio.testing.memory_stream_pair()
    exchange = exchange_over(down, tcp, proxy_side)
    async with client, tcp:
        # A body of 1000 bytes of which 4 come, and a client that then neither sends nor reads.
        await client.send_all(b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1000\r\n\r\npart")
        request = await down.next_event()
        assert type(request) is h11.Request
        transport.pending = os.urandom(4 * 1024 * 1024)  # far more than the buffers hold: it waits
        up_request = relayed_request(request.method, request.target, list(request.headers))
        with trio.fail_after(SEND_TIMEOUT + 10), pytest.raises(RequestFailed) as caught:
            await exchange.run(up_request)
    assert caught.value.status == 408
    assert b"POST /upload" in await upstream.receive_some()  # the upstream connection it held


async def test_a_write_to_a_slow_but_steady_client_outlasts_the_upstream_read_timeout() -> None:
    client, tcp = await client_pair()
    down = H11Stream(tcp, h11.Connection(h11.SERVER))
    upstream, proxy_side = trio.testing.memory_stream_pair()
    exchange = exchange_over(down, tcp, proxy_side)
    body = os.urandom(160 * 1024)  # relayed in two writes: the first within the exchange's deadline
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    received = bytearray()

    async def read_steadily() -> None:  # about 80 KiB/s: the first write takes some 1.5 s
        while len(received) < len(head) + len(body):
            chunk = await client.receive_some(SMALL_BUFFER)
            assert chunk
            received.extend(chunk)
            await trio.sleep(0.05)

    async with client, tcp:
        await client.send_all(b"GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n")
        request = await down.next_event()
        assert type(request) is h11.Request
        await upstream.send_all(head + body)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_steadily)
            with trio.fail_after(SEND_TIMEOUT + 10):
                try:
                    up_request = relayed_request(b"GET", b"/big", [(b"host", b"a.test")])
                    status = await exchange.run(up_request, NO_BODY)
                except ClientGone as exc:
                    pytest.fail(f"the write was cut: {exc}")
    assert status == 200
    assert received.endswith(body)

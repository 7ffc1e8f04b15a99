"""Edge cases a proxy must get right: HEAD on snakeway's own answers, stale
keep-alive connections, stalled peers, framing tricks, failed reloads."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import h11
import pytest
import trio
import trustme

from snakeway.config.model import Bind, Redirect, ServerSettings, UpstreamSettings
from snakeway.server import Server
from tests.e2e.test_tls import with_tls
from tests.helpers import (
    LOOPBACK,
    Client,
    closed_port,
    closed_ports,
    get,
    raw,
    service_config,
    start_snakeway,
    start_upstream,
    status_of,
)
from tests.tlshelpers import manual, write_leaf


async def test_head_gets_snakeways_own_errors_without_a_body(nursery: trio.Nursery) -> None:
    _, proxy = await start_snakeway(nursery, service_config([closed_port()]))
    client = await Client.connect(proxy)
    resp = await client.request("HEAD", "/")
    assert (resp.status, resp.body) == (502, b"")
    resp = await client.request("GET", "/")  # the connection is still usable
    assert resp.status == 502 and resp.body.startswith(b"502 Bad Gateway")
    await client.aclose()


async def start_one_per_connection(nursery: trio.Nursery) -> tuple[int, list[bytes]]:
    """An upstream that drops kept-alive connections without saying so: it answers the first
    request on each (``served <n>``), then drops the next unanswered. Returns (port, bodies served)."""
    served: list[bytes] = []

    async def one_per_connection(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = bytearray()
        while type(event := conn.next_event()) is not h11.EndOfMessage:
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif type(event) is h11.Data:
                body += event.data
        served.append(bytes(body))
        answer = b"served %d" % len(served)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
        await stream.receive_some(65536)  # the next request on this connection...
        await stream.aclose()  # ...is dropped unanswered

    (listener,) = await nursery.start(partial(trio.serve_tcp, one_per_connection, 0, host=LOOPBACK))
    return listener.socket.getsockname()[1], served


async def test_stale_keep_alive_connection_is_retried_on_a_new_one(nursery: trio.Nursery) -> None:
    port, _ = await start_one_per_connection(nursery)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    with trio.fail_after(5):
        client = await Client.connect(proxy)
        assert (await client.request()).body == b"served 1"
        assert (await client.request()).body == b"served 2"
        await client.aclose()


async def test_a_stale_connection_is_retried_for_an_idempotent_request_with_a_small_body(
    nursery: trio.Nursery,
) -> None:
    """A small body is read before connecting, so a PUT can be resent whole; a POST is not resent."""
    port, served = await start_one_per_connection(nursery)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    with trio.fail_after(5):
        client = await Client.connect(proxy)
        assert (await client.request("PUT", body=b"first")).body == b"served 1"
        assert (await client.request("PUT", body=b"second")).body == b"served 2"  # on a new connection
        assert (await client.request("POST", body=b"third")).status == 502
        await client.aclose()
    assert served == [b"first", b"second"]


async def test_upstream_that_stops_reading_the_body_is_504(nursery: trio.Nursery) -> None:
    # Real time over real sockets, with a short timeout: the upload fills the socket buffers
    # within milliseconds, then snakeway's write to the upstream waits out the read timeout.
    read_timeout = 1.0

    async def stalled(stream: trio.SocketStream) -> None:
        await stream.receive_some(1024)
        await trio.sleep_forever()

    (listener,) = await nursery.start(partial(trio.serve_tcp, stalled, 0, host=LOOPBACK))
    server = ServerSettings(upstream=UpstreamSettings(read_timeout_seconds=read_timeout))
    _, proxy = await start_snakeway(nursery, service_config([listener.socket.getsockname()[1]], server=server))
    stream = await trio.open_tcp_stream(LOOPBACK, proxy)
    size = 64 * 1024 * 1024
    started = trio.current_time()
    await stream.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)

    async def upload() -> None:
        chunk = b"x" * 65536
        try:
            for _ in range(size // len(chunk)):
                await stream.send_all(chunk)
        except trio.BrokenResourceError:
            pass

    with trio.fail_after(read_timeout + 10):
        async with trio.open_nursery() as inner:
            inner.start_soon(upload)
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += await stream.receive_some(4096)
            inner.cancel_scope.cancel()
    assert status_of(reply) == 504
    assert trio.current_time() - started >= read_timeout
    await stream.aclose()


async def test_connection_header_cannot_remove_content_length(nursery: trio.Nursery) -> None:
    port, seen = await start_upstream(nursery)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    reply = await raw(
        proxy,
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length, close\r\nContent-Length: 5\r\n\r\nhello",
    )
    assert status_of(reply) == 200
    assert seen.bodies == [b"hello"]


async def test_upstream_with_both_length_and_chunked_is_502(nursery: trio.Nursery) -> None:
    async def ambiguous(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )

    (listener,) = await nursery.start(partial(trio.serve_tcp, ambiguous, 0, host=LOOPBACK))
    _, proxy = await start_snakeway(nursery, service_config([listener.socket.getsockname()[1]]))
    assert (await get(proxy)).status == 502


async def test_request_trailers_are_not_forwarded(nursery: trio.Nursery) -> None:
    trailers: list[list[tuple[bytes, bytes]]] = []

    async def record(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.EndOfMessage):
                trailers.append(list(event.headers))
                break
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    (listener,) = await nursery.start(partial(trio.serve_tcp, record, 0, host=LOOPBACK))
    _, proxy = await start_snakeway(nursery, service_config([listener.socket.getsockname()[1]]))
    reply = await raw(
        proxy,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"2\r\nhi\r\n0\r\nHost: evil.test\r\nContent-Length: 44\r\n\r\n",
    )
    assert status_of(reply) == 200
    assert trailers == [[]]


async def test_426_names_the_protocol(nursery: trio.Nursery) -> None:
    port, _ = await start_upstream(nursery)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    resp = await get(proxy, headers=[("host", "a"), ("connection", "upgrade"), ("upgrade", "websocket")])
    assert resp.status == 426 and resp.header(b"upgrade") == b"websocket"


async def test_a_failed_reload_changes_nothing(nursery: trio.Nursery) -> None:
    port, _ = await start_upstream(nursery)
    config = service_config([port])
    busy = trio.socket.socket()
    await busy.bind((LOOPBACK, 0))
    busy.listen()
    new_port, taken_port = closed_port(), busy.getsockname()[1]
    (ingress,) = config.ingresses
    broken = replace(
        config,
        ingresses=(
            ingress,
            replace(ingress, name="new", bind=Bind(LOOPBACK, new_port)),
            replace(ingress, name="taken", bind=Bind(LOOPBACK, taken_port)),
        ),
    )
    server = Server(config, loader=lambda: broken)
    await nursery.start(server.serve)
    assert not await server.reload()
    assert server.runtime.config is config
    assert len(server.addresses) == 1
    with pytest.raises(OSError):
        await trio.open_tcp_stream(LOOPBACK, new_port)  # not left half-open
    busy.close()


async def test_redirect_refuses_a_host_that_would_forge_the_location(nursery: trio.Nursery, tmp_path: Path) -> None:
    port, _ = await start_upstream(nursery)
    tls_port, plain_port = closed_ports(2)
    tls = manual(write_leaf(trustme.CA(), tmp_path, "a.test"))
    config = with_tls(service_config([port]), tls, port=tls_port, redirect=Redirect(port=plain_port))
    await start_snakeway(nursery, config)
    reply = await raw(plain_port, b"GET /p HTTP/1.1\r\nHost: evil.test/x?\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 400 and b"location" not in reply.lower()
    reply = await raw(plain_port, b"GET /p HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n")
    assert f"location: https://[::1]:{tls_port}/p".encode() in reply.lower()

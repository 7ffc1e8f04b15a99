"""Every error status a client can meet, on real sockets.

Timeouts run in real time, as everything here waits on the kernel: each is set
to a fraction of a second (``TIMEOUT``), and a test measures that the wait
lasted at least that long and ended well before the defaults would have.
"""

from __future__ import annotations

from functools import partial

import pytest
import trio

from snakeway.config.model import ClientSettings, Route, ServerSettings, UpstreamSettings
from tests.helpers import LOOPBACK, Client, get, raw, service_config, start_snakeway, start_upstream, status_of

TIMEOUT = 0.3
# Generous: a loaded machine may be late to wake a task, never early.
LATE = 3.0


async def test_malformed_request_is_400(nursery: trio.Nursery) -> None:
    port, seen = await start_upstream(nursery)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    reply = await raw(proxy, b"GARBAGE\r\n\r\n")
    assert status_of(reply) == 400
    assert b"connection: close" in reply.lower()
    assert seen.requests == []


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", 405),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
    ],
)
async def test_smuggling_shapes_are_refused_and_nothing_follows(
    nursery: trio.Nursery, head: bytes, status: int
) -> None:
    port, seen = await start_upstream(nursery)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    reply = await raw(proxy, head + b"0\r\n\r\n" + smuggled)
    assert status_of(reply) == status
    assert reply.count(b"HTTP/1.1 ") == 1
    assert seen.requests == []


async def test_head_over_limit_in_one_piece_is_431(nursery: trio.Nursery) -> None:
    port, seen = await start_upstream(nursery)
    server = ServerSettings(client=ClientSettings(max_header_bytes=1024))
    _, proxy = await start_snakeway(nursery, service_config([port], server=server))
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
    assert status_of(await raw(proxy, head)) == 431
    assert status_of(await raw(proxy, head[:-4])) == 431  # still incomplete
    assert seen.requests == []


@pytest.mark.parametrize("buffer_bytes", [ClientSettings.buffer_request_body_bytes, 0], ids=["read-first", "streamed"])
async def test_body_over_route_limit_is_413(nursery: trio.Nursery, buffer_bytes: int) -> None:
    port, seen = await start_upstream(nursery)
    routes = (Route(hosts=("*",), path="/", max_body_bytes=100),)
    server = ServerSettings(client=ClientSettings(buffer_request_body_bytes=buffer_bytes))
    _, proxy = await start_snakeway(nursery, service_config([port], routes=routes, server=server))
    client = await Client.connect(proxy)
    assert (await client.request("POST", "/", body=b"x" * 100)).status == 200
    await client.aclose()
    reply = await raw(proxy, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n" + b"x" * 101)
    assert status_of(reply) == 413
    chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    reply = await raw(proxy, chunked + b"50\r\n" + b"x" * 80 + b"\r\n50\r\n" + b"y" * 80 + b"\r\n0\r\n\r\n")
    assert status_of(reply) == 413
    assert len(seen.requests) == 1


async def test_slow_head_is_408(nursery: trio.Nursery) -> None:
    port, _ = await start_upstream(nursery)
    server = ServerSettings(client=ClientSettings(header_timeout_seconds=TIMEOUT))
    _, proxy = await start_snakeway(nursery, service_config([port], server=server))
    start = trio.current_time()
    reply = await raw(proxy, b"GET / HTTP/1.1\r\nHost: a\r\n", timeout=TIMEOUT + LATE)
    assert status_of(reply) == 408
    assert TIMEOUT <= trio.current_time() - start


async def test_idle_keep_alive_closes_silently(nursery: trio.Nursery) -> None:
    port, _ = await start_upstream(nursery)
    server = ServerSettings(client=ClientSettings(idle_timeout_seconds=TIMEOUT))
    _, proxy = await start_snakeway(nursery, service_config([port], server=server))
    client = await Client.connect(proxy)
    assert (await client.request()).status == 200
    start = trio.current_time()
    with trio.fail_after(TIMEOUT + LATE):
        assert await client.stream.receive_some(100) == b""
    assert TIMEOUT <= trio.current_time() - start


async def test_silent_upstream_is_504(nursery: trio.Nursery) -> None:
    async def silent(request, body):  # type: ignore[no-untyped-def]
        await trio.sleep_forever()

    port, _ = await start_upstream(nursery, silent)
    server = ServerSettings(upstream=UpstreamSettings(read_timeout_seconds=TIMEOUT))
    _, proxy = await start_snakeway(nursery, service_config([port], server=server))
    start = trio.current_time()
    with trio.fail_after(TIMEOUT + LATE):
        resp = await get(proxy)
    assert resp.status == 504
    assert TIMEOUT <= trio.current_time() - start


async def test_short_timeouts_hold_while_a_slow_body_keeps_coming(nursery: trio.Nursery) -> None:
    """Every wait gets its timeout (give or take a tenth), however short: a byte every 0.28 s beats 0.5 s.

    A deadline kept from the previous wait for up to 0.3 s (the coarsest a timer could be allowed to be)
    would end the second wait at 0.5 s after the first byte, before the second came at 0.56 s.
    """

    async def trickle(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n")
        for _ in range(6):
            await trio.sleep(0.28)
            await stream.send_all(b"x")
        await stream.receive_some(65536)

    (listener,) = await nursery.start(partial(trio.serve_tcp, trickle, 0, host=LOOPBACK))
    server = ServerSettings(
        upstream=UpstreamSettings(read_timeout_seconds=0.5), client=ClientSettings(idle_timeout_seconds=0.5)
    )
    _, proxy = await start_snakeway(nursery, service_config([listener.socket.getsockname()[1]], server=server))
    with trio.fail_after(10):
        resp = await get(proxy)
    assert resp.status == 200
    assert resp.body == b"x" * 6


async def test_upstream_garbage_is_502(nursery: trio.Nursery) -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"SSH-2.0-OpenSSH\r\n\r\n")
        await stream.aclose()

    (listener,) = await nursery.start(partial(trio.serve_tcp, garbage, 0, host=LOOPBACK))
    _, proxy = await start_snakeway(nursery, service_config([listener.socket.getsockname()[1]]))
    resp = await get(proxy)
    assert resp.status == 502
    assert b"upstream" in resp.body


async def test_upgrade_without_websocket_enabled_is_426(nursery: trio.Nursery) -> None:
    port, seen = await start_upstream(nursery)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    head = [("host", "a"), ("connection", "Upgrade"), ("upgrade", "websocket"), ("sec-websocket-version", "13")]
    resp = await get(proxy, headers=head)
    assert resp.status == 426
    assert seen.requests == []

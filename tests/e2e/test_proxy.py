"""The proxy end to end: real sockets on 127.0.0.1, a real upstream server."""

from __future__ import annotations

from functools import partial

import h11
import pytest
import trio
import trio.testing

from snakeway.config.model import ClientSettings, Route, ServerSettings
from tests.helpers import Client, closed_port, get, raw, service_config, start_snakeway, start_upstream, status_of


async def test_get_is_proxied_with_forwarding_headers(nursery: trio.Nursery) -> None:
    port, seen = await start_upstream(nursery)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    resp = await get(
        proxy,
        "/hello?x=1",
        headers=[("host", "a.test"), ("connection", "keep-alive, x-drop"), ("x-drop", "1"), ("x-keep", "2")],
    )
    assert (resp.status, resp.body) == (200, b"GET /hello?x=1 0")
    assert resp.header(b"via") == b"1.1 snakeway"
    sent = dict(seen.requests[0].headers)
    assert sent[b"host"] == b"a.test"
    assert sent[b"x-forwarded-for"] == b"127.0.0.1"
    assert sent[b"x-forwarded-proto"] == b"http"
    assert sent[b"x-forwarded-host"] == b"a.test"
    assert sent[b"x-keep"] == b"2"
    assert b"x-drop" not in sent


async def test_keep_alive_both_sides(nursery: trio.Nursery) -> None:
    port, seen = await start_upstream(nursery)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    client = await Client.connect(proxy)
    for i in range(5):
        resp = await client.request(target=f"/{i}")
        assert resp.body == f"GET /{i} 0".encode()
    await client.aclose()
    assert seen.connections == 1


async def test_bodies_content_length_and_chunked(nursery: trio.Nursery) -> None:
    port, seen = await start_upstream(nursery)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    client = await Client.connect(proxy)
    resp = await client.request("POST", "/cl", body=b"x" * 100_000)
    assert resp.body == b"POST /cl 100000"
    resp = await client.request(
        "POST", "/chunked", headers=[("host", "a.test"), ("transfer-encoding", "chunked")], body=b"y" * 5000
    )
    assert resp.body == b"POST /chunked 5000"
    assert seen.bodies[1] == b"y" * 5000
    await client.aclose()


@pytest.mark.parametrize("buffer_bytes", [ClientSettings.buffer_request_body_bytes, 0], ids=["read-first", "streamed"])
async def test_expect_100_continue(nursery: trio.Nursery, buffer_bytes: int) -> None:
    port, seen = await start_upstream(nursery)
    server = ServerSettings(client=ClientSettings(buffer_request_body_bytes=buffer_bytes))
    _, proxy = await start_snakeway(nursery, service_config([port], server=server))
    stream = await trio.open_tcp_stream("127.0.0.1", proxy)
    await stream.send_all(
        b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await stream.receive_some(1024)
    assert interim.startswith(b"HTTP/1.1 100 ")
    await stream.send_all(b"hello")
    reply = await stream.receive_some(4096)
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"POST /up 5")
    assert b"expect" not in dict(seen.requests[0].headers)
    await stream.aclose()


async def test_head_and_no_body_statuses(nursery: trio.Nursery) -> None:
    async def handler(request: h11.Request, body: bytes):  # type: ignore[no-untyped-def]
        status = int(request.target.decode().strip("/") or 200)
        headers = [(b"etag", b'"x"')] if status == 304 else []
        return status, headers, b"" if status in (204, 304) else b"body"

    port, _ = await start_upstream(nursery, handler)
    _, proxy = await start_snakeway(nursery, service_config([port]))
    client = await Client.connect(proxy)
    resp = await client.request("HEAD", "/200")
    assert (resp.status, resp.body, resp.header(b"content-length")) == (200, b"", b"4")
    assert (await client.request("GET", "/204")).body == b""
    resp = await client.request("GET", "/304")
    assert (resp.status, resp.body) == (304, b"")
    assert (await client.request("GET", "/200")).body == b"body"
    await client.aclose()


async def test_large_response_is_streamed_with_backpressure(nursery: trio.Nursery) -> None:
    sent = 0
    size = 256 * 1024 * 1024

    async def serve(stream: trio.SocketStream) -> None:
        nonlocal sent
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        chunk = b"z" * 65536
        try:
            while sent < size:
                await stream.send_all(chunk)
                sent += len(chunk)
        except trio.BrokenResourceError:
            pass

    (listener,) = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
    _, proxy = await start_snakeway(nursery, service_config([listener.socket.getsockname()[1]]))
    stream = await trio.open_tcp_stream("127.0.0.1", proxy)
    await stream.send_all(b"GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n")
    received = len(await stream.receive_some(65536))
    # The client stops reading: everything stalls once the socket buffers
    # fill, and the proxy must not have read far ahead into memory.
    await trio.testing.wait_all_tasks_blocked(cushion=0.2)
    assert received < sent < 32 * 1024 * 1024
    await stream.aclose()


async def test_no_route_is_404(nursery: trio.Nursery) -> None:
    port, _ = await start_upstream(nursery)
    config = service_config([port], routes=(Route(hosts=("only.test",), path="/api"),))
    _, proxy = await start_snakeway(nursery, config)
    assert (await get(proxy, "/api")).status == 404
    assert (await get(proxy, "/api", headers=[("host", "only.test")])).status == 200
    assert (await get(proxy, "/apix", headers=[("host", "only.test")])).status == 404


async def test_absolute_form_target_routes_by_its_authority(nursery: trio.Nursery) -> None:
    port, seen = await start_upstream(nursery)
    config = service_config([port], routes=(Route(hosts=("b.test",), path="/"),))
    _, proxy = await start_snakeway(nursery, config)
    reply = await raw(proxy, b"GET http://b.test/x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 200
    assert dict(seen.requests[0].headers)[b"host"] == b"b.test"
    assert seen.requests[0].target == b"/x"
    reply = await raw(proxy, b"GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 404


async def test_upstream_down_is_502_with_a_clear_body(nursery: trio.Nursery) -> None:
    port = closed_port()
    _, proxy = await start_snakeway(nursery, service_config([port]))
    resp = await get(proxy, "/")
    assert resp.status == 502
    assert resp.body.startswith(b"502 Bad Gateway: ")
    assert resp.header(b"content-type") == b"text/plain; charset=utf-8"


async def test_large_upload_is_streamed_with_backpressure(nursery: trio.Nursery) -> None:
    async def stalled(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)  # the head, then it stops reading
        await trio.sleep_forever()

    (listener,) = await nursery.start(partial(trio.serve_tcp, stalled, 0, host="127.0.0.1"))
    _, proxy = await start_snakeway(nursery, service_config([listener.socket.getsockname()[1]]))
    stream = await trio.open_tcp_stream("127.0.0.1", proxy)
    size = 256 * 1024 * 1024
    await stream.send_all(b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n" % size)
    sent = 0

    async def upload() -> None:
        nonlocal sent
        chunk = b"u" * 65536
        while sent < size:
            await stream.send_all(chunk)
            sent += len(chunk)

    async with trio.open_nursery() as inner:
        inner.start_soon(upload)
        await trio.testing.wait_all_tasks_blocked(cushion=0.2)
        assert 0 < sent < 32 * 1024 * 1024
        inner.cancel_scope.cancel()
    await trio.aclose_forcefully(stream)

"""Static files over plain TCP: the kernel copies the body (sendfile), h11 still keeps the count.

Real sockets on 127.0.0.1 (sendfile needs a socket), read back by an h11 client.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import pytest
import trio

from snakeway.config.model import Route, StaticSite
from snakeway.proxy import static_io
from snakeway.proxy.h11io import H11Stream
from snakeway.proxy.static_io import serve_static
from snakeway.tcp import SendTimeout, TcpStream
from tests.glue_sockets import accepted_pair

BIG = os.urandom(3 * 1024 * 1024 + 17)  # more than a socket buffer holds: several sendfile calls


@pytest.fixture
def site(tmp_path: Path) -> StaticSite:
    (tmp_path / "big.bin").write_bytes(BIG)
    (tmp_path / "small.txt").write_bytes(b"hello, world\n")
    return StaticSite(route=Route(hosts=("*",), path="/s"), file_dir=tmp_path, index=None, directory_listing=False)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[trio.SocketStream, H11Stream]]:
    async with accepted_pair() as (client, server):
        yield client, H11Stream(server, h11.Connection(h11.SERVER))


async def serve_one(server: H11Stream, site: StaticSite) -> int:
    request = await server.next_event()
    assert isinstance(request, h11.Request)
    status = await serve_static(server, site, request, request.target)
    assert type(await server.next_event()) is h11.EndOfMessage  # the request's end, as the connection reads it
    return status


async def ask(
    client_stream: trio.SocketStream, client: h11.Connection, target: str, *headers: tuple[str, str], method: str = "GET"
) -> tuple[h11.Response, bytes]:
    request = h11.Request(method=method, target=target, headers=[("Host", "a.test"), *headers])
    await client_stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await client_stream.receive_some(1 << 20))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            return response, bytes(body)


def no_pread(*args: object) -> bytes:
    raise AssertionError("the body was read by snakeway, not copied by the kernel")


async def test_files_ranges_and_heads_on_one_connection_are_copied_by_the_kernel(
    site: StaticSite, pair: tuple[trio.SocketStream, H11Stream], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "pread", no_pread)
    client_stream, server = pair
    client = h11.Connection(h11.CLIENT)
    cases = [
        ("/s/big.bin", (), "GET", 200, BIG),
        ("/s/big.bin", (("Range", "bytes=1000-2999"),), "GET", 206, BIG[1000:3000]),
        ("/s/small.txt", (), "GET", 200, b"hello, world\n"),
        ("/s/big.bin", (), "HEAD", 200, b""),
        ("/s/big.bin", (("Range", "bytes=-5"),), "GET", 206, BIG[-5:]),
    ]
    with trio.fail_after(30):
        for target, headers, method, status, body in cases:
            returned: list[int] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_collect, returned, server, site)
                response, got = await ask(client_stream, client, target, *headers, method=method)
            assert (response.status_code, returned) == (status, [status])
            assert got == body
            length = dict(response.headers)[b"content-length"]
            assert int(length) == (len(BIG) if method == "HEAD" else len(body))
            assert server.conn.our_state is h11.DONE
            server.conn.start_next_cycle()
            client.start_next_cycle()


async def _collect(into: list[int], server: H11Stream, site: StaticSite) -> None:
    into.append(await serve_one(server, site))


async def test_not_modified_is_answered_without_a_body(
    site: StaticSite, pair: tuple[trio.SocketStream, H11Stream]
) -> None:
    client_stream, server = pair
    client = h11.Connection(h11.CLIENT)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_one, server, site)
            first, _ = await ask(client_stream, client, "/s/small.txt")
        server.conn.start_next_cycle()
        client.start_next_cycle()
        last_modified = dict(first.headers)[b"last-modified"].decode()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_one, server, site)
            response, body = await ask(client_stream, client, "/s/small.txt", ("If-Modified-Since", last_modified))
    assert (response.status_code, body) == (304, b"")


async def test_a_file_cut_short_while_sent_breaks_the_connection(
    site: StaticSite, pair: tuple[trio.SocketStream, H11Stream], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = static_io._open_regular

    def open_then_truncate(path: str) -> tuple[int, int]:
        opened = real_open(path)
        os.truncate(path, 100_000)  # after the size was checked: the head promises all of it
        return opened

    monkeypatch.setattr(static_io, "_open_regular", open_then_truncate)
    client_stream, server = pair
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target="/s/big.bin", headers=[("Host", "a.test")])
    await client_stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
    with trio.fail_after(30), pytest.raises(trio.BrokenResourceError):
        await serve_one(server, site)
    assert server.conn.our_state is h11.ERROR
    await server.stream.aclose()
    received = bytearray()
    with trio.fail_after(30):
        while chunk := await client_stream.receive_some(1 << 20):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and f"content-length: {len(BIG)}".encode() in head.lower()
    assert body == BIG[:100_000]  # the promised length never arrives: the client sees the cut


async def test_a_client_that_stops_reading_is_cut_off_by_the_send_timeout(
    site: StaticSite, pair: tuple[trio.SocketStream, H11Stream]
) -> None:
    client_stream, server = pair
    assert isinstance(server.stream, TcpStream)
    server.stream.send_timeout = 0.3
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target="/s/big.bin", headers=[("Host", "a.test")])
    await client_stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
    with trio.fail_after(30), pytest.raises(SendTimeout):
        await serve_one(server, site)  # the client reads nothing: 3 MiB cannot all fit in the socket buffers
    assert server.conn.our_state is h11.ERROR

"""accept_tls on an accepted TCP socket (real sockets on 127.0.0.1): the first byte is peeked at, not read.

The in-memory tests of tests/tls/test_handshake.py take the path that reads the first bytes and replays them;
these take the one every accepted connection takes.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator

import pytest
import trio
import trustme

from snakeway.tcp import TcpStream
from snakeway.tls.certmap import CertMap, CertMapHolder
from snakeway.tls.handshake import HANDSHAKE, HandshakeInfo, accept_tls
from snakeway.tls.sni import listener_context
from tests.glue_sockets import accepted_pair
from tests.tls.helpers import client_context, make_site


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def base(ca: trustme.CA) -> ssl.SSLContext:
    site = make_site(ca, "a.test")
    return listener_context(CertMapHolder(CertMap.build([(site.names, site.context)], default="a.test")))


@pytest.fixture
async def pair() -> AsyncIterator[tuple[trio.SocketStream, TcpStream]]:
    async with accepted_pair() as both:
        yield both


async def test_peeked_bytes_are_read_again(pair: tuple[trio.SocketStream, TcpStream]) -> None:
    client, server = pair
    await client.send_all(b"\x16abc")
    with trio.fail_after(10):
        assert await server.receive_some(1, flags=socket.MSG_PEEK) == b"\x16"
        assert await server.receive_some(10, flags=socket.MSG_PEEK) == b"\x16abc"
        assert await server.receive_some(10) == b"\x16abc"
        await client.send_eof()
        assert await server.receive_some(10, flags=socket.MSG_PEEK) == b""


async def test_a_tls_client_is_served_on_the_socket_itself(
    ca: trustme.CA, base: ssl.SSLContext, pair: tuple[trio.SocketStream, TcpStream]
) -> None:
    client_raw, server = pair
    client = trio.SSLStream(client_raw, client_context(ca), server_hostname="a.test")
    counts: dict[str, int] = {}
    served: list[trio.SSLStream[trio.abc.Stream] | None] = []
    info: list[HandshakeInfo | None] = []

    async def serve() -> None:
        served.append(await accept_tls(server, base, timeout=10, client="c", counts=counts))
        info.append(HANDSHAKE.get())
        assert served[0] is not None
        await served[0].send_all(await served[0].receive_some(100))  # an echo over the connection

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await client.send_all(b"ping")
            assert await client.receive_some(100) == b"ping"
    assert counts == {"ok": 1}
    assert served[0] is not None and served[0].transport_stream is server  # nothing replays bytes in between
    assert info[0] is not None and (info[0].sni, info[0].alpn, info[0].cert_names) == ("a.test", "http/1.1", ("a.test",))


async def test_plain_http_on_the_tls_port_still_gets_the_clear_text_400(
    base: ssl.SSLContext, pair: tuple[trio.SocketStream, TcpStream]
) -> None:
    client, server = pair
    counts: dict[str, int] = {}
    await client.send_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    with trio.fail_after(10):
        assert await accept_tls(server, base, timeout=5, client="c", counts=counts) is None
        answer = b""
        while chunk := await client.receive_some(1000):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ") and b"this port speaks HTTPS" in answer
    assert counts == {"plain_http": 1}


async def test_a_client_that_stalls_mid_hello_is_dropped_at_the_deadline(
    base: ssl.SSLContext, pair: tuple[trio.SocketStream, TcpStream]
) -> None:
    client, server = pair
    counts: dict[str, int] = {}
    await client.send_all(b"\x16\x03\x01")  # a record begins, and nothing more comes
    with trio.fail_after(10):
        assert await accept_tls(server, base, timeout=0.2, client="c", counts=counts) is None
        assert await client.receive_some(1000) == b""  # closed
    assert counts == {"timeout": 1}

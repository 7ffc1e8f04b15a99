"""accept_tls: HandshakeInfo in the task's context, deadlines, plain HTTP and garbage on a TLS port."""

from __future__ import annotations

import ssl
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from snakeway.tls.certmap import CertMap, CertMapHolder
from snakeway.tls.handshake import HANDSHAKE, HandshakeInfo, accept_tls, covers, fatal_alert_record
from snakeway.tls.sni import listener_context
from tests.tls.helpers import Site, client_context, handshake, make_site

if TYPE_CHECKING:
    import trustme


@pytest.fixture(scope="module")
def sites(ca: trustme.CA) -> dict[str, Site]:
    return {"a": make_site(ca, "a.test"), "b": make_site(ca, "b.test", "*.b.test")}


@pytest.fixture
def base(sites: dict[str, Site]) -> ssl.SSLContext:
    certs = CertMap.build([(site.names, site.context) for site in sites.values()], default="a.test")
    return listener_context(CertMapHolder(certs))


async def test_handshake_info(ca: trustme.CA, base: ssl.SSLContext) -> None:
    outcome = await handshake(base, client_context(ca), "www.b.test")
    assert outcome.info == HandshakeInfo(
        client="memory",
        tls_version="TLSv1.3",
        cipher=outcome.info.cipher if outcome.info else "",
        sni="www.b.test",
        alpn="http/1.1",
        cert_names=("b.test", "*.b.test"),
    )
    assert outcome.info is not None
    assert outcome.info.cipher.startswith("TLS_")


async def test_tls12_client(ca: trustme.CA, base: ssl.SSLContext) -> None:
    client_ctx = client_context(ca)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    outcome = await handshake(base, client_ctx, "a.test")
    assert outcome.info is not None
    assert outcome.info.tls_version == "TLSv1.2"
    assert outcome.info.cipher.startswith("ECDHE-")


async def test_handshake_var_is_per_task(ca: trustme.CA, base: ssl.SSLContext) -> None:
    seen: dict[str, HandshakeInfo | None] = {}
    both_done = trio.Event()
    done = 0

    async def connection(sni: str) -> None:
        nonlocal done
        client_raw, server_raw = trio.testing.memory_stream_pair()
        client = trio.SSLStream(client_raw, client_context(ca), server_hostname=sni)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.do_handshake)
            server = await accept_tls(server_raw, base, timeout=10, client=sni)
        assert server is not None
        done += 1
        if done == 2:
            both_done.set()
        await both_done.wait()  # both set their variable before either reads it
        seen[sni] = HANDSHAKE.get()
        await trio.aclose_forcefully(server)
        await trio.aclose_forcefully(client)

    async def bystander() -> None:
        await both_done.wait()
        seen["bystander"] = HANDSHAKE.get()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(bystander)
        nursery.start_soon(connection, "a.test")
        nursery.start_soon(connection, "x.b.test")

    assert seen["a.test"] is not None
    assert seen["a.test"].sni == "a.test"
    assert seen["x.b.test"] is not None
    assert seen["x.b.test"].sni == "x.b.test"
    assert seen["bystander"] is None
    assert HANDSHAKE.get() is None


async def test_silent_client_times_out(autojump_clock: trio.testing.MockClock, base: ssl.SSLContext) -> None:
    client, server = trio.testing.memory_stream_pair()
    start = trio.current_time()
    assert await accept_tls(server, base, timeout=10, client="silent") is None
    assert trio.current_time() - start == pytest.approx(10)
    assert await client.receive_some() == b""  # closed
    assert HANDSHAKE.get() is None


async def test_stalled_client_hello_times_out(autojump_clock: trio.testing.MockClock, base: ssl.SSLContext) -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then nothing
    start = trio.current_time()
    assert await accept_tls(server, base, timeout=5, client="stalled") is None
    assert trio.current_time() - start == pytest.approx(5)


async def test_client_that_closes_at_once(base: ssl.SSLContext) -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.aclose()
    assert await accept_tls(server, base, timeout=10, client="gone") is None


async def read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def test_plain_http_gets_a_clear_text_400(base: ssl.SSLContext) -> None:
    client, server = trio.testing.memory_stream_pair()
    result: list[object] = []

    async def serve() -> None:
        result.append(await accept_tls(server, base, timeout=10, client="plain"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await client.send_all(b"GE")  # a slow client: the method arrives in pieces
        await trio.testing.wait_all_tasks_blocked()
        await client.send_all(b"T / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        response = b""
        while b"HTTPS" not in response:
            response += await client.receive_some()
        await client.aclose()  # lets the server stop draining
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"this port speaks HTTPS" in response
    assert result == [None]


async def test_plain_http_over_tcp_is_answered_before_closing(base: ssl.SSLContext) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        assert await accept_tls(stream, base, timeout=10, client="tcp") is None

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            await stream.send_eof()
            response = await read_until_eof(stream)
            await stream.aclose()
        nursery.cancel_scope.cancel()
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert response.endswith(b"this port speaks HTTPS: use https:// in the URL\n")


async def test_garbage_is_dropped(base: ssl.SSLContext) -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(b"\x00\x01garbage\r\n" * 10)
    assert await accept_tls(server, base, timeout=10, client="garbage") is None
    data = await read_until_eof(client)
    assert not data.startswith(b"HTTP/")


def test_fatal_alert_record() -> None:
    assert fatal_alert_record(ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME).hex() == "15030300020270"


@pytest.mark.parametrize(
    ("served", "host", "expected"),
    [
        (HandshakeInfo("c", "TLSv1.3", "x", cert_names=("a.test",)), "a.test", True),
        (HandshakeInfo("c", "TLSv1.3", "x", cert_names=("a.test",)), "b.test", False),
        (HandshakeInfo("c", "TLSv1.3", "x", cert_names=("*.b.test",)), "WWW.b.test.", True),
        (HandshakeInfo("c", "TLSv1.3", "x", cert_names=None), "anything.test", True),
        (HandshakeInfo("c", "TLSv1.3", "x", cert_names=()), "a.test", False),
        (("a.test", "127.0.0.1"), "127.0.0.1", True),
        (["*.b.test"], "b.test", False),
    ],
)
def test_covers(served: HandshakeInfo | tuple[str, ...], host: str, expected: bool) -> None:
    assert covers(served, host) is expected


async def test_covers_for_the_connection(ca: trustme.CA, base: ssl.SSLContext) -> None:
    outcome = await handshake(base, client_context(ca, check_hostname=False), "unknown.test")
    assert outcome.info is not None
    assert outcome.info.cert_names == ("a.test",)  # the default
    assert covers(outcome.info, "a.test")
    assert not covers(outcome.info, "unknown.test")  # 421 Misdirected Request

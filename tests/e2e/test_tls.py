"""HTTPS end to end: manual, multi-certificate and internal modes with real clients."""

from __future__ import annotations

import ssl
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trustme

from snakeway.config.model import Bind, Redirect, ServerSettings, Tls, TlsMode
from tests.helpers import closed_ports, raw, service_config, start_snakeway, start_upstream, status_of
from tests.tlshelpers import client_context, manual, tls_request, write_leaf


def with_tls(config, tls: Tls, *, port: int = 0, redirect: Redirect | None = None):  # type: ignore[no-untyped-def]
    (ingress,) = config.ingresses
    bind = Bind(ingress.bind.interface, port, tls=tls, redirect=redirect)
    return replace(config, ingresses=(replace(ingress, bind=bind),))


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


async def test_manual_certificate_serves_https(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    port, seen = await start_upstream(nursery)
    files = write_leaf(ca, tmp_path, "a.test")
    _, proxy = await start_snakeway(nursery, with_tls(service_config([port]), manual(files)))
    ctx = client_context(ca.cert_pem.bytes())
    result = await tls_request(proxy, ctx, "a.test", host="a.test", target="/x")
    assert result.peer_names == ("a.test",)
    assert result.response is not None and result.response.status == 200
    assert dict(seen.requests[0].headers)[b"x-forwarded-proto"] == b"https"
    # One certificate configured with cert/key: it is also the default, as in nginx.
    no_sni = await tls_request(proxy, client_context(ca.cert_pem.bytes()), None)
    assert no_sni.peer_names == ("a.test",)


async def test_several_certificates_chosen_by_sni(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    port, _ = await start_upstream(nursery)
    a = write_leaf(ca, tmp_path, "a.test")
    b = write_leaf(ca, tmp_path, "b.test", "*.b.test")
    idn = write_leaf(ca, tmp_path, "xn--bcher-kva.test")
    tls = manual(a, b, idn, default="a.test")
    _, proxy = await start_snakeway(nursery, with_tls(service_config([port]), tls))
    ctx = lambda: client_context(ca.cert_pem.bytes())  # noqa: E731
    assert (await tls_request(proxy, ctx(), "b.test")).peer_names == ("b.test", "*.b.test")
    assert (await tls_request(proxy, ctx(), "www.b.test")).peer_names == ("b.test", "*.b.test")
    assert (await tls_request(proxy, ctx(), "xn--bcher-kva.test")).peer_names == ("xn--bcher-kva.test",)
    assert (await tls_request(proxy, ctx(), "a.test")).peer_names == ("a.test",)
    # No SNI, or a name no certificate covers: the configured default.
    assert (await tls_request(proxy, ctx(), None)).peer_names == ("a.test",)
    unknown = ctx()
    unknown.check_hostname = False
    assert (await tls_request(proxy, unknown, "other.test")).peer_names == ("a.test",)


async def test_unknown_name_without_default_is_refused(
    nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA
) -> None:
    port, _ = await start_upstream(nursery)
    tls = manual(write_leaf(ca, tmp_path, "a.test"), write_leaf(ca, tmp_path, "b.test"))
    _, proxy = await start_snakeway(nursery, with_tls(service_config([port]), tls))
    ctx = client_context(ca.cert_pem.bytes())
    ctx.check_hostname = False
    with pytest.raises(trio.BrokenResourceError) as info:
        await tls_request(proxy, ctx, "other.test")
    assert isinstance(info.value.__cause__, ssl.SSLError)
    assert "UNRECOGNIZED_NAME" in str(info.value.__cause__)
    assert (await tls_request(proxy, client_context(ca.cert_pem.bytes()), "b.test")).peer_names == ("b.test",)


async def test_host_not_covered_by_the_certificate_is_421(
    nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA
) -> None:
    port, seen = await start_upstream(nursery)
    tls = manual(write_leaf(ca, tmp_path, "a.test"), write_leaf(ca, tmp_path, "b.test"), default="a.test")
    _, proxy = await start_snakeway(nursery, with_tls(service_config([port]), tls))
    result = await tls_request(proxy, client_context(ca.cert_pem.bytes()), "a.test", host="b.test")
    assert result.response is not None and result.response.status == 421
    result = await tls_request(proxy, client_context(ca.cert_pem.bytes()), "a.test", host="A.TEST:443")
    assert result.response is not None and result.response.status == 200
    assert len(seen.requests) == 1


async def test_plain_http_to_the_tls_port_gets_a_clear_400(
    nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA
) -> None:
    port, seen = await start_upstream(nursery)
    _, proxy = await start_snakeway(
        nursery, with_tls(service_config([port]), manual(write_leaf(ca, tmp_path, "a.test")))
    )
    reply = await raw(proxy, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert status_of(reply) == 400
    assert b"HTTPS" in reply
    assert await raw(proxy, b"\x00\x01garbage\xff" * 10) == b""
    # And the listener still serves real clients.
    assert (await tls_request(proxy, client_context(ca.cert_pem.bytes()), "a.test")).peer_names == ("a.test",)
    assert seen.requests == []


async def test_silent_client_is_dropped_after_the_handshake_timeout(
    nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA
) -> None:
    timeout = 0.3  # real time: the wait is on a real socket
    port, _ = await start_upstream(nursery)
    tls = replace(manual(write_leaf(ca, tmp_path, "a.test")), handshake_timeout_seconds=timeout)
    _, proxy = await start_snakeway(nursery, with_tls(service_config([port]), tls))
    stream = await trio.open_tcp_stream("127.0.0.1", proxy)
    start = trio.current_time()
    with trio.fail_after(timeout + 3):
        assert await stream.receive_some(10) == b""
    assert timeout <= trio.current_time() - start
    await stream.aclose()


async def test_redirect_listener(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> None:
    port, _ = await start_upstream(nursery)
    tls_port, plain_port = closed_ports(2)
    config = with_tls(
        service_config([port]),
        manual(write_leaf(ca, tmp_path, "a.test")),
        port=tls_port,
        redirect=Redirect(port=plain_port, status=308),
    )
    await start_snakeway(nursery, config)
    reply = await raw(plain_port, b"GET /x/y?z=1 HTTP/1.1\r\nHost: a.test:1234\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 308
    assert f"location: https://a.test:{tls_port}/x/y?z=1".encode() in reply.lower()
    reply = await raw(plain_port, b"GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 404


async def test_internal_mode_issues_from_the_local_ca(nursery: trio.Nursery, tmp_path: Path) -> None:
    port, _ = await start_upstream(nursery)
    server_settings = ServerSettings(state_dir=tmp_path / "state")
    tls = Tls(mode=TlsMode.INTERNAL, domains=("localhost", "app.test"))
    server, proxy = await start_snakeway(nursery, with_tls(service_config([port], server=server_settings), tls))
    root = tmp_path / "state" / "pki" / "root.pem"
    assert server.internal.ca is not None and server.internal.ca.root_path == root
    assert (root.parent / "root.key").stat().st_mode & 0o777 == 0o600
    result = await tls_request(proxy, client_context(root), "localhost", host="localhost")
    assert result.peer_names == ("localhost", "app.test")
    assert result.response is not None and result.response.status == 200


async def test_reload_swaps_certificates_with_no_failed_handshake(
    nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA
) -> None:
    from snakeway.server import Server

    port, _ = await start_upstream(nursery)
    files = write_leaf(ca, tmp_path, "a.test")
    config = with_tls(service_config([port]), manual(files))
    server = Server(config, loader=lambda: config)
    await nursery.start(server.serve)
    (proxy,) = [a[1] for a in server.addresses.values()]
    first = (await tls_request(proxy, client_context(ca.cert_pem.bytes()), "a.test")).serial
    serials: set[int] = set()
    failures: list[BaseException] = []
    stop = trio.Event()

    async def handshake_loop() -> None:
        while not stop.is_set():
            try:
                serials.add((await tls_request(proxy, client_context(ca.cert_pem.bytes()), "a.test")).serial)
            except (OSError, trio.BrokenResourceError) as exc:
                failures.append(exc)

    async with trio.open_nursery() as clients:
        for _ in range(4):
            clients.start_soon(handshake_loop)
        await trio.sleep(0.1)
        write_leaf(ca, tmp_path, "a.test")  # new files in place
        assert await server.reload()
        await trio.sleep(0.1)
        # A key that does not match: refused, the served certificate stays.
        second = (await tls_request(proxy, client_context(ca.cert_pem.bytes()), "a.test")).serial
        files.key.write_bytes(trustme.CA().issue_cert("a.test").private_key_pem.bytes())
        assert not await server.reload()
        await trio.sleep(0.1)
        stop.set()
    assert failures == []
    assert first != second
    assert serials == {first, second}
    assert (await tls_request(proxy, client_context(ca.cert_pem.bytes()), "a.test")).serial == second

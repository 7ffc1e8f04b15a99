"""Automatic certificates against the real ACME server, Pebble.

snakeway runs in-process with its real listeners: Pebble validates HTTP-01 on
the redirect listener (``http_port``) and TLS-ALPN-01 on the TLS listener
(``tls_port``), and every name resolves to 127.0.0.1 through Pebble's DNS.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from snakeway.acme.filestore import FileStore
from snakeway.config.model import (
    AcmeSettings,
    Bind,
    CertStoreSettings,
    Challenge,
    Config,
    Endpoint,
    Ingress,
    Redirect,
    Route,
    ServerSettings,
    Service,
    Tls,
    TlsAutomation,
    TlsMode,
    Upstream,
)
from snakeway.server import Server
from tests.helpers import start_upstream
from tests.pebble import Pebble, free_port, run_pebble
from tests.tlshelpers import client_context, tls_request

NAMES = ("a.example.test", "b.example.test", "c.example.test")


def acme_config(
    pebble: Pebble,
    state: Path,
    upstream: int,
    *,
    challenge: Challenge = Challenge.HTTP_01,
    renew_within_days: float | None = 30,
    check_interval_seconds: float = 600,
    directory_url: str | None = None,
    certificate_per_domain: bool = False,
) -> Config:
    automation = TlsAutomation(
        renew_within_days=renew_within_days,
        check_interval_seconds=check_interval_seconds,
        acme=AcmeSettings(directory_url=directory_url or pebble.directory_url, ca_file=pebble.ca_file, data_dir=state / "acme"),
        cert_store=CertStoreSettings(cert_dir=state / "certs"),
    )
    tls = Tls(mode=TlsMode.ACME, domains=NAMES, challenge=challenge, certificate_per_domain=certificate_per_domain)
    bind = Bind("127.0.0.1", pebble.tls_port, tls=tls, redirect=Redirect(port=pebble.http_port))
    service = Service(
        name="app",
        routes=(Route(hosts=("*",), path="/"),),
        upstreams=(Upstream(Endpoint("127.0.0.1", upstream)),),
    )
    return Config(
        server=ServerSettings(state_dir=state, tls_automation=automation),
        ingresses=(Ingress(name="site", bind=bind, services=(service,)),),
    )


async def wait_for_certificate(server: Server, previous: int | None = None, timeout: float = 30) -> None:
    cert_id = "acme:" + NAMES[0]
    with trio.fail_after(timeout):
        while True:
            entry = server.certs.entry(cert_id)
            if entry is not None and (previous is None or id(entry) != previous):
                return
            await trio.sleep(0.02)


async def assert_serves_every_name(pebble: Pebble, port: int) -> set[int]:
    root = await pebble.roots()
    serials = set()
    for name in NAMES:
        result = await tls_request(port, client_context(root), name, host=name, target="/hello")
        assert set(result.peer_names) == set(NAMES)
        assert result.response is not None and result.response.body == b"GET /hello 0"
        serials.add(result.serial)
    return serials


@pytest.mark.parametrize("challenge", [Challenge.HTTP_01, Challenge.TLS_ALPN_01])
@pytest.mark.parametrize("pebble", [{}, {"nonce_reject": 50, "authz_reuse": 0}], indirect=True, ids=["default", "faults"])
async def test_certificates_arrive_and_serve_every_name(
    nursery: trio.Nursery, pebble: Pebble, tmp_path: Path, challenge: Challenge
) -> None:
    upstream, _ = await start_upstream(nursery)
    server = Server(acme_config(pebble, tmp_path, upstream, challenge=challenge))
    started = trio.current_time()
    await nursery.start(server.serve)
    await wait_for_certificate(server)
    logging.getLogger(__name__).info("first certificate after %.2fs", trio.current_time() - started)
    serials = await assert_serves_every_name(pebble, pebble.tls_port)
    assert len(serials) == 1
    # Stored where the configuration says, key private.
    stored = tmp_path / "certs" / NAMES[0]
    assert (stored / "cert.pem").exists() and (stored / "key.pem").stat().st_mode & 0o777 == 0o600
    assert len(server.http01) == 0 and len(server.tlsalpn) == 0  # challenges cleaned up


async def test_certificate_per_domain_gives_each_name_its_own(
    nursery: trio.Nursery, pebble: Pebble, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    server = Server(acme_config(pebble, tmp_path, upstream, certificate_per_domain=True))
    await nursery.start(server.serve)
    with trio.fail_after(30):
        while any(server.certs.entry(f"acme:{name}") is None for name in NAMES):
            await trio.sleep(0.02)
    root = await pebble.roots()
    serials = set()
    for name in NAMES:
        result = await tls_request(pebble.tls_port, client_context(root), name, host=name, target="/hello")
        assert result.peer_names == (name,)
        assert result.response is not None and result.response.body == b"GET /hello 0"
        serials.add(result.serial)
    assert len(serials) == len(NAMES)
    assert sorted(p.name for p in (tmp_path / "certs").iterdir() if not p.name.startswith(".")) == sorted(NAMES)


@pytest.mark.parametrize("pebble", [{"validity_seconds": 16}], indirect=True)
async def test_renewal_without_restart_while_clients_handshake(
    nursery: trio.Nursery, pebble: Pebble, tmp_path: Path
) -> None:
    upstream, _ = await start_upstream(nursery)
    # 16-second certificates are renewed with half their lifetime left, 8 seconds after issuance.
    config = acme_config(pebble, tmp_path, upstream, renew_within_days=None, check_interval_seconds=0.5)
    server = Server(config)
    await nursery.start(server.serve)
    await wait_for_certificate(server)
    root = await pebble.roots()
    first = (await tls_request(pebble.tls_port, client_context(root), NAMES[0])).serial
    serials: set[int] = set()
    failures: list[BaseException] = []
    handshakes = 0

    async def handshake_loop() -> None:
        nonlocal handshakes
        while len(serials - {first}) < 1:
            try:
                serials.add((await tls_request(pebble.tls_port, client_context(root), NAMES[1])).serial)
                handshakes += 1
            except (OSError, trio.BrokenResourceError) as exc:
                failures.append(exc)

    with trio.fail_after(30):
        async with trio.open_nursery() as clients:
            for _ in range(3):
                clients.start_soon(handshake_loop)
    assert failures == []
    assert first in serials and len(serials) >= 2
    assert handshakes > 3


async def test_stored_certificates_survive_a_ca_outage(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The CA is down at start-up: stored certificates are served, the failure is
    logged with its next attempt, and once the CA is back a reload (SIGHUP)
    retries at once instead of waiting out the back-off."""
    upstream, _ = await start_upstream(nursery)
    http_port, tls_port, api_port = free_port(), free_port(), free_port()
    workdir = tmp_path / "pebble"
    workdir.mkdir()
    state = tmp_path / "state"

    # 40-second certificates: due for renewal 20 seconds after issuance.
    async with run_pebble(workdir, http_port=http_port, tls_port=tls_port, api_port=api_port,
                          validity_seconds=40) as pebble:
        async with trio.open_nursery() as first_run:
            server = Server(acme_config(pebble, state, upstream, renew_within_days=None))
            await first_run.start(server.serve)
            await wait_for_certificate(server)
            first_serials = await assert_serves_every_name(pebble, tls_port)
            server.shutdown()
        root = await pebble.roots()
    stored = await FileStore(state / "certs", state / "acme").load(NAMES[0])
    assert stored is not None
    half_life = stored.not_before + (stored.not_after - stored.not_before) / 2
    await trio.sleep((half_life - datetime.now(UTC)).total_seconds() + 0.5)

    # The CA is gone. Start again with renewal due: the stored certificate is served.
    config = acme_config(pebble, state, upstream, renew_within_days=None)
    server = Server(config, loader=lambda: config)
    with caplog.at_level(logging.ERROR, logger="snakeway.acme.manager"):
        await nursery.start(server.serve)
        result = await tls_request(tls_port, client_context(root), NAMES[0], host=NAMES[0])
        assert {result.serial} == first_serials
        with trio.fail_after(30):
            while not any("issuance failed" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.02)
    message = next(r.getMessage() for r in caplog.records if "issuance failed" in r.getMessage())
    assert "the current certificate stays in service" in message and "next attempt at" in message
    state_file = await server.manager.store.load_state(NAMES[0])  # type: ignore[union-attr]
    assert state_file is not None and state_file.failures == 1 and state_file.last_error

    # The CA comes back at the same address; a reload retries now.
    async with run_pebble(workdir, http_port=http_port, tls_port=tls_port, api_port=api_port) as pebble:
        previous = id(server.certs.entry("acme:" + NAMES[0]))
        assert await server.reload()
        await wait_for_certificate(server, previous)
        serials = await assert_serves_every_name(pebble, tls_port)
        assert serials.isdisjoint(first_serials)
    state_file = await server.manager.store.load_state(NAMES[0])  # type: ignore[union-attr]
    assert state_file is not None and state_file.failures == 0
    server.shutdown()

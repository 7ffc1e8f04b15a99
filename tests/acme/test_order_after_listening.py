"""No order before the listeners that answer the CA's validation are bound.

A real in-process server over real sockets on 127.0.0.1, whose binding of listeners is held back by a test
seam (``snakeway.server.bind`` waits for the test). The CA is the FakeCA, validating HTTP-01 by a real GET to
the plain listener, as a real CA would: an order placed before that listener is up fails its validation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h11
import pytest
import trio
import trustme

from snakeway import server as server_module
from snakeway.acme.backend import ChallengeTask
from snakeway.acme.store import CertBundle, MemoryStore
from snakeway.clock import SystemClock
from snakeway.config.model import (
    AcmeSettings,
    Bind,
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
from snakeway.testing import FakeCA
from tests.pebble import free_port

NEW = "new.example.test"  # nothing stored: ordered at start-up
STORED = "stored.example.test"  # in the store: served from the first handshake


def http01_validator(port: int) -> Callable[[ChallengeTask], Awaitable[bool]]:
    """Validates HTTP-01 as a CA does: a GET to ``port`` that must answer the key authorization."""

    async def validate(task: ChallengeTask) -> bool:
        client = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=f"/.well-known/acme-challenge/{task.token}",
                              headers=[("Host", task.domain), ("Connection", "close")])
        body, status = b"", 0
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(await stream.receive_some(4096))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
        return status == 200 and body.decode() == task.key_authorization

    return validate


def config(tmp_path: Path, tls_port: int, plain_port: int) -> Config:
    automation = TlsAutomation(
        renew_within_days=30, check_interval_seconds=600, acme=AcmeSettings(directory_url="https://ca.test/dir")
    )
    service = Service(
        name="app", routes=(Route(hosts=("*",), path="/"),), upstreams=(Upstream(Endpoint("127.0.0.1", 9)),)
    )
    ingresses = tuple(
        Ingress(
            name=f"site{i}",
            bind=Bind("127.0.0.1", port, tls=Tls(mode=TlsMode.ACME, domains=(name,)),
                      redirect=Redirect(port=plain_port) if i == 0 else None),
            services=(service,),
        )
        for i, (name, port) in enumerate(((NEW, tls_port), (STORED, free_port())))
    )
    return Config(server=ServerSettings(state_dir=tmp_path, tls_automation=automation), ingresses=ingresses)


async def test_no_order_before_every_listener_is_bound(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = trio.Event()
    binding = trio.Event()
    real_bind = server_module.bind

    async def slow_bind(*args: object, **kwargs: object) -> object:
        binding.set()
        await release.wait()
        return await real_bind(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(server_module, "bind", slow_bind)
    tls_port, plain_port = free_port(), free_port()
    ca = FakeCA(SystemClock(), validator=http01_validator(plain_port))
    store = MemoryStore()
    issuer = trustme.CA()
    start = datetime.now(UTC) - timedelta(hours=1)
    leaf = issuer.issue_cert(STORED, not_before=start, not_after=start + timedelta(days=90))
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    await store.save(CertBundle.from_pem(STORED, (STORED,), chain, leaf.private_key_pem.bytes()))
    server = Server(config(tmp_path, tls_port, plain_port), acme_backend=ca, cert_store=store)
    nursery.start_soon(server.serve)

    with trio.fail_after(10):
        await binding.wait()
    # The certificate manager runs; the stored certificate is in the cert map already.
    assert server.certs.entry("acme:" + STORED) is not None
    await trio.sleep(1.0)  # time enough for an order, were one placed now
    assert ca.orders == []

    release.set()
    with trio.fail_after(10):
        while server.certs.entry("acme:" + NEW) is None:
            await trio.sleep(0.02)
    assert ca.orders == [(NEW,)]
    assert ca.records[NEW].failed_validations == 0
    server.shutdown()

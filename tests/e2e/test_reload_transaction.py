"""A reload is prepared whole before any of it is applied: a failure at any step leaves the running state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trustme

import snakeway.build
import snakeway.tls.sources
from snakeway.config.model import Bind, Config, ServerSettings, Tls, TlsMode
from snakeway.errors import ConfigError
from snakeway.server import Server
from tests.helpers import LOOPBACK, closed_port, closed_ports, get, refuses, service_config, start_upstream
from tests.tlshelpers import client_context, manual, tls_request, write_leaf

STEPS = ["config load", "runtime build", "manual certificate", "internal certificate", "access log", "bind"]


def with_listeners(config: Config, *binds: Bind) -> Config:
    """``config`` with one more ingress, serving the same service, per bind."""
    (ingress,) = config.ingresses
    extra = tuple(replace(ingress, name=f"extra{i}", bind=bind) for i, bind in enumerate(binds))
    return replace(config, ingresses=(ingress, *extra))


def lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


@pytest.mark.parametrize("step", STEPS)
async def test_a_reload_that_fails_at_any_step_leaves_the_running_state_intact(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    ca = trustme.CA()
    upstream, _ = await start_upstream(nursery)
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old_log, new_log = tmp_path / "old.log", tmp_path / "new.log"
    settings = ServerSettings(state_dir=tmp_path / "state", access_log=old_log, workers=1)
    tls_bind = Bind(LOOPBACK, closed_port(), tls=manual(write_leaf(ca, tmp_path / "old", "a.test")))
    old = with_listeners(service_config([upstream], server=settings), tls_bind)
    # The new configuration changes everything a reload applies: a new certificate for the TLS
    # listener, a new access log, a new plain listener and a new internal-certificate listener.
    new_files = write_leaf(ca, tmp_path / "new", "a.test")
    plain, internal = closed_ports(2)
    new = with_listeners(
        service_config([upstream], server=replace(settings, access_log=new_log)),
        replace(tls_bind, tls=manual(new_files)),
        Bind(LOOPBACK, plain),
        Bind(LOOPBACK, internal, tls=Tls(mode=TlsMode.INTERNAL, domains=("internal.test",))),
    )
    fault: dict[str, Callable[[], None]] = {}
    current = [old]

    def loader() -> Config:
        if "load" in fault:
            fault["load"]()
        return current[0]

    server = Server(old, loader)
    await nursery.start(server.serve)
    (proxy,) = [address[1] for key, address in server.addresses.items() if key[1] != tls_bind.port]
    client = lambda: client_context(ca.cert_pem.bytes())  # noqa: E731
    old_serial = (await tls_request(tls_bind.port, client(), "a.test")).serial
    runtime = server.runtime
    served = server.certs.holder((LOOPBACK, tls_bind.port)).current

    def fail(exc: Exception) -> Callable[..., None]:
        def raises(*args: object, **kwargs: object) -> None:
            raise exc

        return raises

    current[0] = new
    occupied = None
    if step == "config load":
        fault["load"] = fail(ConfigError("config.hcl:1: a mistake"))
    elif step == "runtime build":
        monkeypatch.setattr(snakeway.build, "build_runtime", fail(ConfigError("cannot compile")))
    elif step == "manual certificate":
        new_files.key.write_bytes(trustme.CA().issue_cert("a.test").private_key_pem.bytes())
    elif step == "internal certificate":
        monkeypatch.setattr(snakeway.tls.sources, "shared_leaf", fail(OSError(28, "No space left on device")))
    elif step == "access log":
        current[0] = replace(new, server=replace(new.server, access_log=tmp_path / "missing" / "access.log"))
    else:  # a port in use, bound after the other new listeners
        occupied = trio.socket.socket()
        await occupied.bind((LOOPBACK, 0))
        occupied.listen()
        taken = replace(new.ingresses[0], name="taken", bind=Bind(LOOPBACK, occupied.getsockname()[1]))
        current[0] = replace(new, ingresses=(*new.ingresses, taken))

    assert not await server.reload()

    assert server.runtime is runtime
    assert server.certs.holder((LOOPBACK, tls_bind.port)).current is served
    assert (await tls_request(tls_bind.port, client(), "a.test")).serial == old_serial
    logged = lines(old_log)
    assert (await get(proxy)).status == 200
    assert lines(old_log) == logged + 1
    assert lines(new_log) == 0  # prepared (perhaps created), never written to
    assert await refuses(plain) and await refuses(internal)

    # Fixed, the same reload applies whole.
    monkeypatch.undo()
    fault.clear()
    if occupied is not None:
        occupied.close()
    new_files = write_leaf(ca, tmp_path / "new", "a.test")
    current[0] = new
    assert await server.reload()
    assert server.runtime is not runtime
    new_serial = (await tls_request(tls_bind.port, client(), "a.test")).serial
    assert new_serial != old_serial
    assert (await get(plain)).status == 200
    assert lines(new_log) == 1
    assert lines(old_log) == logged + 1
    assert (await tls_request(internal, client_context(server.internal.ca.root_path), "internal.test")).response is None

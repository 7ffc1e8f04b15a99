"""Several snakeway processes, each with one worker, sharing one file store, against Pebble.

Two ``python -m snakeway serve`` processes (as on two machines sharing the store over NFS, or two on one
host) have their own state directories and listeners, and the same ``cert_dir`` and ACME ``data_dir``.
Pebble's HTTP-01 validations reach them through the round-robin TCP balancer of :mod:`tests.cluster`, as a load
balancer in front of several nodes would: so some land on the process that did not order. The certificate
under test is added by a reload of both while both are serving (a configuration deployed to every node), so
that both are up when it is ordered.
"""

from __future__ import annotations

import functools
import signal
import ssl
from pathlib import Path
from typing import Protocol

import trio

from tests.acme.test_renewal_pebble import ISSUED, follow_log, handshake, orders, pebble_at, stop, until_logged
from tests.cluster import RoundRobin
from tests.helpers import start_upstream
from tests.pebble import Pebble, free_port
from tests.proc import snakeway
from tests.tlshelpers import client_context

FIRST = ("first.shared.example.test",)
NAMES = ("shared.example.test", "www.shared.example.test", "api.shared.example.test")
PICKED_UP = b"picked up from the store"


def write_config(
    path: Path, *, names: tuple[str, ...], shared: Path, pebble: Pebble, upstream: int, tls_port: int, plain_port: int
) -> None:
    """One single-worker process: its own state directory and ports, the store in ``shared``."""
    domains = ", ".join(f'"{name}"' for name in names)
    path.write_text(
        f"""
server {{
  version   = 1
  workers   = 1
  state_dir = "{path.parent / "state"}"
  tls_automation = {{
    acme = {{
      directory_url = "{pebble.directory_url}"
      ca_file       = "{pebble.ca_file}"
      data_dir      = "{shared}/acme"
    }}
    cert_store = {{ type = "filesystem", cert_dir = "{shared}/certs" }}
  }}
}}
ingress "site" {{
  bind = {{
    interface = "127.0.0.1"
    port      = {tls_port}
    tls       = {{ mode = "acme", domains = [{domains}], challenge = "http-01" }}
    redirect_http_to_https = {{ port = {plain_port} }}
  }}
  services = [{{
    name      = "app"
    routes    = [{{ hosts = ["*"], path = "/" }}]
    upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}]
  }}]
}}
"""
    )


async def until_served(ctx: ssl.SSLContext, ports: list[int], timeout: float = 30) -> set[int]:
    """Handshake for every name on every port until each verifies (a certificate for all of ``NAMES``);
    the serials served then."""
    with trio.fail_after(timeout):
        while True:
            try:
                return {(await handshake(port, ctx, name)).serial_number for port in ports for name in NAMES}
            except (ssl.SSLError, trio.BrokenResourceError):  # not served yet: no certificate, or the first one
                await trio.sleep(0.1)


class WriteNode(Protocol):
    def __call__(
        self, path: Path, *, names: tuple[str, ...], pebble: Pebble, upstream: int, tls_port: int, plain_port: int
    ) -> None: ...


async def two_nodes_order_once_and_both_serve(nursery: trio.Nursery, tmp_path: Path, write: WriteNode) -> None:
    """Two single-worker processes configured by ``write`` (sharing one store) serve ``FIRST``, then are reloaded
    with ``NAMES``: exactly one of them orders it, both serve it, and validations reach both."""
    upstream, _ = await start_upstream(nursery)
    tls_ports, plain_ports = [free_port(), free_port()], [free_port(), free_port()]
    configs = []
    for i in range(2):
        (tmp_path / f"node{i}").mkdir()
        configs.append(tmp_path / f"node{i}" / "snakeway.hcl")
    async with pebble_at(tmp_path) as pebble:
        balancer = RoundRobin(plain_ports)
        async with trio.open_nursery() as balancing:
            await balancing.start(balancer.serve, pebble.http_port)

            def configure(names: tuple[str, ...]) -> None:
                for i, config in enumerate(configs):
                    write(config, names=names, pebble=pebble, upstream=upstream, tls_port=tls_ports[i],
                          plain_port=plain_ports[i])

            configure(FIRST)
            async with snakeway(configs[0]) as first, snakeway(configs[1]) as second:
                procs = (first, second)
                for proc in procs:
                    nursery.start_soon(follow_log, proc)
                    # The first certificate is served (issued, picked up, or found in the store at start-up).
                    await until_logged(proc, lambda log: b"for " + FIRST[0].encode() in log and (
                        ISSUED in log or PICKED_UP in log or b"loaded stored" in log), timeout=30)
                configure(NAMES)
                for proc in procs:
                    proc.process.send_signal(signal.SIGHUP)
                root = await pebble.roots()
                ctx = client_context(root)
                serials = await until_served(ctx, tls_ports)
                for proc in procs:
                    await stop(proc)
            balancing.cancel_scope.cancel()
    logs = [bytes(proc.log) for proc in procs]
    joined = ", ".join(NAMES)
    ordered = [[names for names in orders(log) if names == joined] for log in logs]
    assert sum(map(len, ordered)) == 1, ordered
    assert len(serials) == 1  # both serve the one certificate, for every name
    orderer = 0 if ordered[0] else 1
    # Pebble validated through the balancer, every validation was answered, and some went to the process
    # that did not order.
    assert all(line == b"HTTP/1.1 200 OK" for _, line in balancer.answers), balancer.answers
    assert any(index != orderer for index, _ in balancer.answers[-len(NAMES):]), balancer.answers


async def test_two_single_worker_processes_sharing_a_file_store_order_once_and_both_serve(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    await two_nodes_order_once_and_both_serve(nursery, tmp_path, functools.partial(write_config,
                                                                                  shared=tmp_path / "shared"))

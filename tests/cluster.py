"""Several ``python -m snakeway serve`` nodes sharing one Redis store, against one Pebble, as real processes.

:func:`run_cluster` starts a ``redis-server``, a Pebble, and N single-worker snakeway nodes (each with its own
``state_dir`` and ports), with the round-robin TCP balancer :class:`RoundRobin` in front of Pebble's ``httpPort``
and ``tlsPort``, as a load balancer in front of several machines would be: Pebble's HTTP-01 and TLS-ALPN-01
validations reach every node, also the ones that did not order. What the tests look at is outside snakeway:
Pebble's own log (orders made, certificates issued), Redis's keys (who holds a lease, which serial the index
holds), TLS handshakes on each node's port, and each node's log.

A :class:`Gate` on a relay holds connections (or the data of some) until the test opens it: on the balancers
it keeps a validation, so an order, "in progress" for as long as a test needs; on a node's own relay to Redis
(``redis_relays=True``) it holds chosen writes of that node.

The benchmark row "3 nodes, 100 names from empty" (:mod:`benchmarks.rows_cluster`) runs the same cluster.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import signal
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tests.acme.test_renewal_pebble import follow_log, handshake
from tests.pebble import LOOPBACK, Pebble, free_port, run_pebble
from tests.proc import Running, snakeway
from tests.redisserver import RedisServer, run_redis
from tests.tlshelpers import client_context

PREFIX = "cluster"
KEY = bytes(range(1, 33))  # the store's encryption key (any 32 bytes)
ADDED_ORDER = re.compile(rb'Added order "([^"]+)" to the db')
ISSUED_SERIAL = re.compile(rb"Issued certificate serial ([0-9a-f]+) for order")


class Gate:
    """Holds what ``match`` selects while closed; open at first.

    ``held`` counts what it held since it was last closed (also what it let go on opening).
    """

    def __init__(self) -> None:
        self._open = trio.Event()
        self._open.set()
        self.match: Callable[[bytes], bool] = lambda _: True
        self.held = 0

    def close(self, match: Callable[[bytes], bool] = lambda _: True) -> None:
        self._open = trio.Event()
        self.match = match
        self.held = 0

    def open(self) -> None:
        self._open.set()

    async def passing(self, data: bytes) -> None:
        """Return when ``data`` may go on: at once, unless the gate is closed and ``data`` is what it holds."""
        opened = self._open
        if not opened.is_set() and self.match(data):
            self.held += 1
            await opened.wait()


class RoundRobin:
    """A TCP balancer: each connection goes to the next of ``ports`` (skipping one that refuses it, or that the
    test marked ``down``, as a load balancer's health check would); remembers where each went and the first line
    that came back.

    The client speaks first (HTTP, TLS and Redis all do): its first data is read before a backend is chosen, and
    every piece of it passes :attr:`gate` on its way, so a closed gate holds a connection before it reaches any
    node, or holds the data it matches.
    """

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.down: set[int] = set()  # indexes of ports skipped
        self.gate = Gate()
        self._next = itertools.count()
        self.answers: list[tuple[int, bytes]] = []  # (index of the port, first line of the answer)
        self.returned = 0  # bytes passed from backends to clients

    async def serve(self, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.serve_tcp(self._handle, port, host=LOOPBACK, task_status=task_status)

    async def _backend(self) -> tuple[int, trio.SocketStream] | None:
        first = next(self._next)
        for index in (i % len(self.ports) for i in range(first, first + len(self.ports))):
            if index in self.down:
                continue
            try:
                return index, await trio.open_tcp_stream(LOOPBACK, self.ports[index])
            except OSError:
                continue
        return None

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            try:
                data = await client.receive_some(65536)
            except (trio.BrokenResourceError, OSError):
                return
            if not data:
                return
            await self.gate.passing(data)
            chosen = await self._backend()
            if chosen is None:
                return
            index, backend = chosen
            answer = bytearray()
            async with backend:

                async def upstream(data: bytes) -> None:
                    while data:
                        await backend.send_all(data)
                        data = await client.receive_some(65536)
                        await self.gate.passing(data)
                    await backend.send_eof()

                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(upstream, data)
                        while data := await backend.receive_some(65536):
                            answer += data
                            await client.send_all(data)
                            self.returned += len(data)
                        nursery.cancel_scope.cancel()
                except* (trio.BrokenResourceError, OSError):
                    pass  # either side reset the connection: the answer so far is recorded
            self.answers.append((index, bytes(answer).split(b"\r\n", 1)[0]))


def replacing(key: str) -> Callable[[bytes], bool]:
    """A :class:`Gate` match for the data of a fenced write that replaces the Redis hash ``key`` whole (the
    ``hreplace`` of :mod:`snakeway.acme.redislease`'s script: a certificate, an order in flight, an account)."""
    wanted = key.encode()
    return lambda data: b"hreplace" in data and wanted in data


def pebble_orders(pebble: Pebble) -> int:
    """How many orders Pebble made (from its own log)."""
    return len(ADDED_ORDER.findall((pebble.log_dir / "pebble.log").read_bytes()))


def pebble_issued(pebble: Pebble) -> list[int]:
    """The serials of the certificates Pebble issued, in order (from its own log)."""
    return [int(serial, 16) for serial in ISSUED_SERIAL.findall((pebble.log_dir / "pebble.log").read_bytes())]


def redis_value(redis: RedisServer, *command: str) -> bytes | None:
    """The bulk-string reply of one command (``GET``, ``HGET``...): None for a nil reply (blocking)."""
    reply = redis.raw(*command)
    if reply.startswith(b"$-1") or reply.startswith(b"_"):
        return None
    assert reply.startswith(b"$"), reply
    size, _, rest = reply[1:].partition(b"\r\n")
    return rest[: int(size)]


def redis_array(redis: RedisServer, *command: str) -> list[bytes]:
    """The array-of-bulk-strings reply of one command (``HGETALL``...) (blocking)."""
    head, _, rest = redis.raw(*command).partition(b"\r\n")
    assert head.startswith(b"*"), head
    items = []
    for _ in range(int(head[1:])):
        size, _, rest = rest.partition(b"\r\n")
        items.append(rest[: int(size[1:])])
        rest = rest[int(size[1:]) + 2:]
    return items


def node_config(
    *,
    state_dir: Path,
    pebble: Pebble,
    redis_url: str,
    key_file: Path,
    names: Iterable[str],
    tls_port: int,
    plain_port: int,
    upstream: int,
    challenge: str = "http-01",
    check_interval: float = 1,
    store_options: str = "",
) -> str:
    """One node's configuration: one worker, one certificate per name, the store in Redis under :data:`PREFIX`."""
    domains = ", ".join(f'"{name}"' for name in names)
    return f"""
server {{
  version   = 1
  workers   = 1
  state_dir = "{state_dir}"
  tls_automation = {{
    check_interval_seconds = {check_interval}
    acme = {{ directory_url = "{pebble.directory_url}", ca_file = "{pebble.ca_file}" }}
    cert_store = {{ type = "redis", url = "{redis_url}", key_prefix = "{PREFIX}",
                   encryption_key_file = "{key_file}" {store_options} }}
  }}
}}
ingress "site" {{
  bind = {{
    interface = "127.0.0.1"
    port      = {tls_port}
    tls       = {{ mode = "acme", domains = [{domains}], challenge = "{challenge}", certificate_per_domain = true }}
    redirect_http_to_https = {{ port = {plain_port} }}
  }}
  services = [{{
    name      = "app"
    routes    = [{{ hosts = ["*"], path = "/" }}]
    upstreams = [{{ endpoint = {{ host = "127.0.0.1", port = {upstream} }} }}]
  }}]
}}
"""


@dataclass
class Node:
    """One snakeway process of the cluster; ``proc`` is None until started."""

    index: int
    config: Path
    tls_port: int
    plain_port: int
    relay: RoundRobin | None = None  # its own way to Redis, with ``redis_relays``, listening on ``relay_port``
    relay_port: int = 0
    proc: Running | None = None

    @property
    def process(self) -> trio.Process:
        assert self.proc is not None, "not started"
        return self.proc.process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> Running:
        assert self.proc is not None, "not started"
        return self.proc

    @property
    def redis_gate(self) -> Gate:
        """The gate on its way to Redis (with ``redis_relays``)."""
        assert self.relay is not None, "no relay to Redis"
        return self.relay.gate

    @property
    def log(self) -> bytes:
        return b"" if self.proc is None else bytes(self.proc.log)


@dataclass
class Cluster:
    """A running cluster (see :func:`run_cluster`)."""

    pebble: Pebble
    redis: RedisServer
    http: RoundRobin  # in front of Pebble's httpPort: the nodes' plain ports
    tls: RoundRobin  # in front of Pebble's tlsPort: the nodes' TLS ports
    nodes: list[Node]
    write: Callable[[Node, Iterable[str]], None]
    context: ssl.SSLContext  # a client's, trusting the root Pebble issues under
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _nursery: trio.Nursery | None = None

    def orders(self) -> int:
        return pebble_orders(self.pebble)

    def hold_validations(self) -> None:
        """Hold every validation connection at both balancers until :meth:`release_validations`."""
        self.http.gate.close()
        self.tls.gate.close()

    def release_validations(self) -> None:
        self.http.gate.open()
        self.tls.gate.open()

    def validations_held(self) -> int:
        return self.http.gate.held + self.tls.gate.held

    def mark_down(self, node: Node) -> None:
        """Take ``node`` out of both balancers (a load balancer's health check failing)."""
        self.http.down.add(node.index)
        self.tls.down.add(node.index)

    async def start(self, node: Node) -> None:
        assert self._nursery is not None
        node.proc = await self._stack.enter_async_context(snakeway(node.config))
        self._nursery.start_soon(follow_log, node.proc)

    def reload(self, names: Iterable[str]) -> None:
        """Write every node's configuration with ``names`` and SIGHUP the running ones (a configuration deploy)."""
        names = list(names)
        for node in self.nodes:
            self.write(node, names)
            if node.proc is not None and node.proc.process.returncode is None:
                node.proc.process.send_signal(signal.SIGHUP)

    def lease_holder(self, name: str) -> Node | None:
        """The node whose owner id (``<host>:<pid>:<random>``) the lease on ``name`` holds, or None if unleased."""
        owner = redis_value(self.redis, "GET", f"{PREFIX}:lease:{name}")
        if owner is None:
            return None
        pid = int(owner.split(b":")[-2])
        found = [node for node in self.nodes if node.proc is not None and node.pid == pid]
        assert found, f"lease on {name} held by {owner!r}, not a node of this cluster"
        return found[0]

    def stored_serial(self, name: str) -> int | None:
        """The serial the store's index holds for ``name`` (blocking)."""
        return self.stored_serials().get(name)

    def stored_serials(self) -> dict[str, int]:
        """The serial the store's index holds for each name (blocking)."""
        fields = redis_array(self.redis, "HGETALL", f"{PREFIX}:certs")
        pairs = zip(fields[::2], fields[1::2], strict=True)
        return {name.decode(): int(json.loads(meta)["serial"], 16) for name, meta in pairs}

    async def served(self, node: Node, name: str) -> int | None:
        """The serial ``node`` serves for ``name`` (verified against Pebble's root), or None if no valid one."""
        try:
            return (await handshake(node.tls_port, self.context, name)).serial_number
        except (ssl.SSLError, trio.BrokenResourceError, OSError):
            return None

    async def until_served(
        self, names: Iterable[str], *, nodes: Iterable[Node] | None = None, unlike: Mapping[str, int] | None = None,
        timeout: float = 60, confirm: bool = True,
    ) -> dict[str, int]:
        """Wait until each of ``nodes`` (default: every running one) serves, for each of ``names``, the certificate
        the store's index holds, valid and not the one ``unlike`` names; those serials.

        Only a name the index holds a new certificate for is asked for (so a poll of many names costs few
        handshakes); ``confirm`` asks every node for every name once more at the end.
        """
        chosen = [n for n in (self.nodes if nodes is None else nodes) if n.proc is not None]
        names, unlike = list(names), unlike or {}
        seen: dict[tuple[int, str], int] = {}
        with trio.fail_after(timeout):
            while len(seen) < len(chosen) * len(names):
                stored = await trio.to_thread.run_sync(self.stored_serials)
                for node in chosen:
                    for name in names:
                        serial = stored.get(name)
                        if serial is None or serial == unlike.get(name) or seen.get((node.index, name)) == serial:
                            continue
                        seen.pop((node.index, name), None)
                        if await self.served(node, name) == serial:
                            seen[node.index, name] = serial
                await trio.sleep(0.05)
            if confirm:
                for node, name in itertools.product(chosen, names):
                    assert await self.served(node, name) == seen[node.index, name], (node.index, name)
        return {name: seen[chosen[0].index, name] for name in names}


@asynccontextmanager
async def run_cluster(
    tmp_path: Path,
    names: Iterable[str],
    *,
    upstream: int,
    size: int = 3,
    challenge: str = "http-01",
    check_interval: float = 1,
    store_options: str = "",
    validity_seconds: int | None = None,
    redis_relays: bool = False,
    start: bool = True,
) -> AsyncIterator[Cluster]:
    """Redis, Pebble, both balancers and ``size`` nodes configured for ``names`` (started unless ``start`` is
    False); everything is stopped at exit, whatever happened.

    Args:
        upstream: the port every node proxies to.
        challenge: ``http-01`` or ``tls-alpn-01``.
        store_options: more keys of the ``cert_store`` block, e.g. ``lease_seconds = 3``.
        validity_seconds: the lifetime of Pebble's certificates (default: Pebble's).
        redis_relays: each node reaches Redis through a relay of its own (``Node.relay``), whose gate can hold
            that node's writes.
    """
    options = {} if validity_seconds is None else {"validity_seconds": validity_seconds}
    (tmp_path / "redis").mkdir()
    (tmp_path / "pebble").mkdir()
    key_file = tmp_path / "store.key"
    key_file.write_bytes(base64.b64encode(KEY))
    async with (
        run_redis(tmp_path / "redis") as redis,
        run_pebble(tmp_path / "pebble", http_port=free_port(), tls_port=free_port(), **options) as pebble,
        trio.open_nursery() as nursery,
    ):
        nodes = []
        for i in range(size):
            (tmp_path / f"node{i}").mkdir()
            relay = RoundRobin([redis.port]) if redis_relays else None
            nodes.append(Node(i, tmp_path / f"node{i}" / "snakeway.hcl", free_port(), free_port(), relay,
                              free_port() if redis_relays else 0))

        def write(node: Node, names: Iterable[str]) -> None:
            url = redis.url if node.relay is None else f"redis://{LOOPBACK}:{node.relay_port}/0"
            node.config.write_text(node_config(
                state_dir=node.config.parent / "state", pebble=pebble, redis_url=url, key_file=key_file,
                names=names, tls_port=node.tls_port, plain_port=node.plain_port, upstream=upstream,
                challenge=challenge, check_interval=check_interval, store_options=store_options,
            ))

        for node in nodes:
            if node.relay is not None:
                await nursery.start(node.relay.serve, node.relay_port)
        cluster = Cluster(pebble, redis, RoundRobin([n.plain_port for n in nodes]),
                          RoundRobin([n.tls_port for n in nodes]), nodes, write, client_context(await pebble.roots()))
        cluster._nursery = nursery
        await nursery.start(cluster.http.serve, pebble.http_port)
        await nursery.start(cluster.tls.serve, pebble.tls_port)
        names = list(names)
        for node in nodes:
            write(node, names)
        try:
            async with cluster._stack:
                if start:
                    for node in nodes:
                        await cluster.start(node)
                try:
                    yield cluster
                finally:
                    for node in nodes:  # a stopped node must go on to die of the kill
                        if node.proc is not None and node.proc.process.returncode is None:
                            node.proc.process.send_signal(signal.SIGCONT)
                    cluster.release_validations()
                    for node in nodes:
                        if node.relay is not None:
                            node.relay.gate.open()
        finally:
            for node in nodes:  # for a look after a failure
                node.config.with_name("snakeway.log").write_bytes(node.log)
        nursery.cancel_scope.cancel()

"""From a configuration to the pieces that serve it, prepared whole before any is applied.

Theory of operation
-------------------
Applying a configuration (at start-up, and on every reload) has two phases. :meth:`Builder.prepare` does
everything that can fail: it compiles the configuration into a :class:`~snakeway.proxy.runtime.Runtime`,
reads and checks the manual certificates, issues (or loads) the missing internal ones, builds the TLS context
and certificate holder of each new TLS listener, opens the access log and binds the new listeners. What it
makes is a :class:`Prepared`, and nothing running has changed yet: on any error, or if a shutdown cancels it,
:meth:`Prepared.discard` closes what it opened and the running configuration stays as it was.

:meth:`Builder.commit` then applies a :class:`Prepared` with assignments only, which cannot fail: the
certificate registry gets every listener and certificate in one :meth:`~snakeway.tls.registry.CertRegistry.replace`,
the access log its new file (the old one is closed), the upstream pool and balancer health their settings.
The server (:mod:`snakeway.server`) swaps its runtime reference, starts the new listeners on the sockets
bound here and stops the dropped ones.

The long-lived pieces that do not change on reload (the certificate manager and the coordination of workers
over a shared certificate store) are wired here too, once, by :func:`coordinator` and :func:`cert_manager`.

Everything a handshake or a request reads goes through a reference swapped in the commit, so a failed reload
is invisible to clients: the same runtime, the same certificate maps, the same log file.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

import trio

from snakeway import logs
from snakeway.acme.backend import AcmeBackend
from snakeway.acme.challenges import Http01Tokens
from snakeway.acme.coordination import Coordinator, FileCoordinator, LocalCoordinator
from snakeway.acme.issuers import decode_mac_key
from snakeway.acme.managed import managed_certs
from snakeway.acme.manager import CertManager
from snakeway.acme.store import CertStore, MemoryStore, open_store
from snakeway.acme.tlsalpn import TlsAlpnChallenges
from snakeway.binder import bind, close_all
from snakeway.clock import WallClock
from snakeway.config.model import AcmeSettings, Config, LogFormat, StoreType
from snakeway.listeners import ListenerKey, ListenerSpec, cert_ids, default_name
from snakeway.proxy.accesslog import LogFile
from snakeway.proxy.runtime import Runtime, Shared, build_runtime
from snakeway.tls.certmap import CertEntry, CertMap, CertMapHolder, canonical_entry
from snakeway.tls.registry import CertRegistry, Served
from snakeway.tls.sni import listener_context
from snakeway.tls.sources import InternalIssuer, InternalPlan, load_manual

# Over a shared store: how often each process compares every certificate's stamp in the store even though the
# store's generation did not change (a safety net; a change is seen within the coordinator's poll_seconds).
WATCH_INTERVAL = 10.0


@dataclass
class Prepared:
    """A configuration ready to apply: every piece built, nothing running changed."""

    runtime: Runtime
    # Keyed by ListenerKey; typed as the registry takes its keys.
    served: dict[object, tuple[Served, CertMapHolder]] = field(default_factory=dict)
    entries: dict[str, CertEntry] = field(default_factory=dict)  # canonical: installing them cannot fail
    internal: InternalPlan | None = None
    log: LogFile | None = None
    # Listeners new in this configuration: their sockets and, for TLS, their context.
    bound: dict[ListenerKey, list[socket.socket]] = field(default_factory=dict)
    tls_contexts: dict[ListenerKey, ssl.SSLContext] = field(default_factory=dict)

    @property
    def config(self) -> Config:
        return self.runtime.config

    def discard(self) -> None:
        """Close what was opened for a configuration that will not be applied."""
        if self.log is not None:
            self.log.close()
        close_all(self.bound.values())
        self.bound.clear()


class Builder:
    """Turns configurations into :class:`Prepared` pieces and applies them.

    Args:
      shared: state that outlives configurations (pool, balancer health, access log).
      certs: the certificate registry every TLS listener reads.
      internal: the local CA's issuer.
      clock: wall time, for certificate validity.
      reuse_port: bind ports shared with other worker processes.
    """

    def __init__(
        self, shared: Shared, certs: CertRegistry, internal: InternalIssuer, clock: WallClock, *, reuse_port: bool
    ) -> None:
        self.shared = shared
        self.certs = certs
        self.internal = internal
        self.clock = clock
        self.reuse_port = reuse_port

    def runtime(self, config: Config, previous: Runtime | None = None) -> Runtime:
        """Compile ``config`` (no I/O); services unchanged since ``previous`` keep their balancer."""
        return build_runtime(config, self.shared, previous)

    async def prepare(self, runtime: Runtime, new: list[ListenerSpec]) -> Prepared:
        """Build everything ``runtime`` needs and bind the listeners ``new``; nothing is applied.

        On an error or a cancellation whatever was opened is closed again before it propagates.

        Raises:
          CertificateError, ValueError: a certificate cannot be served.
          OSError: a file cannot be read or opened, a port cannot be bound.
        """
        prepared = Prepared(runtime)
        try:
            tls_blocks = [tls for spec in runtime.listeners.values() for tls in spec.tls]
            manual = await load_manual(tls_blocks, now=self.clock.now())
            prepared.internal = await self.internal.prepare(tls_blocks)
            entries = manual | prepared.internal.entries
            prepared.entries = {cert_id: canonical_entry(entry) for cert_id, entry in entries.items()}
            for key, spec in runtime.listeners.items():
                if spec.tls:  # HTTPS, or an admin listener with tls
                    served = Served(tuple(i for tls in spec.tls for i in cert_ids(tls)), default_name(spec))
                    prepared.served[key] = (served, self.certs.existing_holder(key) or CertMapHolder(CertMap.empty()))
            for spec in new:
                if spec.tls:  # HTTPS, or an admin listener with tls
                    prepared.tls_contexts[spec.key] = listener_context(prepared.served[spec.key][1])
            prepared.log = LogFile.open(runtime.config.server.access_log)
            for spec in new:
                prepared.bound[spec.key] = await bind(spec, reuse_port=self.reuse_port)
        except BaseException:
            prepared.discard()
            raise
        return prepared

    def commit(self, prepared: Prepared) -> None:
        """Apply ``prepared``'s certificates, access log and upstream settings. Cannot fail."""
        server = prepared.config.server
        assert prepared.internal is not None and prepared.log is not None
        self.internal.commit(prepared.internal)
        self.certs.replace(prepared.served, prepared.entries)
        self.shared.access.reopen(prepared.log, with_pid=server.workers > 1, json=server.log.format is LogFormat.JSON)
        logs.reconfigure(server.log, with_pid=server.workers > 1)
        self.shared.pool.settings = server.upstream
        self.shared.health.cooldown = server.upstream.failure_cooldown_seconds


def coordinator(config: Config, store: CertStore | None = None) -> Coordinator:
    """How this process coordinates certificate work with every other process sharing its store.

    A filesystem store is coordinated through its files whatever ``server.workers`` is: other workers, other
    snakeway processes on this host and other machines (over a shared filesystem) may use the same directories.
    A Redis store is coordinated through the same Redis, under its key prefix, for the same reasons.
    The memory store lives in this process only; so does a :class:`MemoryStore` given as ``store`` in place of
    the configured one.
    """
    automation = config.server.tls_automation
    if automation is None or automation.cert_store.type is StoreType.MEMORY or isinstance(store, MemoryStore):
        return LocalCoordinator()
    settings = automation.cert_store
    if settings.type is StoreType.REDIS:
        from snakeway.acme.rediscoord import RedisCoordinator  # coredis only loads with a Redis store

        assert settings.url is not None  # the configuration requires it
        return RedisCoordinator(settings.url, key_prefix=settings.key_prefix, lease_ttl=settings.lease_seconds)
    state_dir = config.server.state_dir
    cert_dir = automation.cert_store.cert_dir or state_dir / "certs"
    return FileCoordinator(cert_dir, automation.acme.data_dir or state_dir / "acme")


def cert_manager(
    config: Config,
    registry: CertRegistry,
    http01: Http01Tokens,
    tlsalpn: TlsAlpnChallenges,
    clock: WallClock,
    coordinator: Coordinator,
    *,
    backend: AcmeBackend | None,
    store: CertStore | None,
    listening: trio.Event | None = None,
    acme_counts: dict[str, dict[str, int]] | None = None,
    attempts: dict[str, int] | None = None,
) -> CertManager | None:
    """The ACME certificate manager, if ``config`` automates certificates; ``backend`` and ``store`` default to
    the configured CA and store; no order starts before ``listening`` is set (None: at once)."""
    automation = config.server.tls_automation
    if automation is None:
        return None
    acme = automation.acme
    if store is None and automation.cert_store.type is StoreType.REDIS:
        from snakeway.acme.cachedstore import open_cached  # coredis only loads with a Redis store

        # Served from a local copy while Redis is away (`check` and `certs` read Redis itself).
        store = open_cached(automation.cert_store, config.server.state_dir)
    elif store is None:
        store = open_store(automation.cert_store, acme.data_dir, config.server.state_dir)
    fallback_backends: tuple[AcmeBackend, ...] = ()
    if backend is None:
        backend, *more = (acme_backend(issuer, acme_counts) for issuer in automation.issuers)
        fallback_backends = tuple(more)
    return CertManager(
        settings=automation,
        certs=managed_certs(config),
        store=store,
        backend=backend,
        registry=registry,
        http01=http01,
        tlsalpn=tlsalpn,
        clock=clock,
        coordinator=coordinator,
        watch_interval=WATCH_INTERVAL if is_shared(coordinator) else None,
        listening=listening,
        attempts=attempts,
        fallback_backends=fallback_backends,
    )


def acme_backend(acme: AcmeSettings, counts: dict[str, dict[str, int]] | None) -> AcmeBackend:
    """The client of one configured ACME CA (reads its External Account Binding MAC key now)."""
    from snakeway.acme.backend import ClientV2Backend

    eab = None
    if acme.eab is not None:
        mac_key = acme.eab.mac_key_file.read_text(encoding="ascii").strip()
        decode_mac_key(mac_key)  # `check` verified it; a file changed since fails here, at start-up
        eab = (acme.eab.key_id, mac_key)
    return ClientV2Backend(
        acme.directory_url, ca_file=acme.ca_file, counts=counts,
        profile=acme.profile, preferred_chain=acme.preferred_chain, eab=eab,
    )


def is_shared(coordinator: Coordinator) -> bool:
    """Whether other processes use the store ``coordinator`` coordinates: their certificates are watched for,
    and challenges are answered for them."""
    return not isinstance(coordinator, LocalCoordinator)

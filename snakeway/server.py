"""The root of a running snakeway: certificates, listeners, reloads and graceful shutdown.

One nursery supervises everything. Certificates are ready before any
listener opens: manual ones are read and checked, internal ones issued, so
the first handshake already has what it needs. The accept loops run in a
nursery of their own so that shutdown can stop accepting first; connection
handlers run in a third, which gets ``drain_seconds`` to finish the requests
in flight before it is cancelled. Idle keep-alive connections close at once.

A reload swaps the :class:`~snakeway.proxy.runtime.Runtime` reference: the
next request on any connection, old or new, sees the new routes, services
and upstreams; certificate files are re-read and each TLS listener's
certificate map is replaced in one reference swap. Anything wrong in the new
configuration or certificates leaves the running one in place. Reloads run one
at a time in a task of their own; one asked for during start-up is applied once
serving, and a shutdown cancels the one in progress. A shutdown during start-up
stops start-up where it is.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from snakeway.accept import serve_sockets
from snakeway.acme.backend import AcmeBackend
from snakeway.acme.challenges import Http01Tokens
from snakeway.acme.coordination import Coordinator, FileCoordinator, LocalCoordinator
from snakeway.acme.managed import managed_certs
from snakeway.acme.manager import CertManager
from snakeway.acme.store import CertStore, open_store
from snakeway.acme.tlsalpn import TlsAlpnChallenges
from snakeway.clock import SystemClock, WallClock
from snakeway.config.model import Config, StoreType
from snakeway.errors import ConfigError, SnakewayError
from snakeway.handoff import ConfigHandoff, stamp
from snakeway.listeners import ListenerKey, ListenerSpec, Role, cert_ids, default_name
from snakeway.proxy.balance import Health
from snakeway.proxy.http1 import Http1Connection
from snakeway.proxy.listener import Drain, ListenerContext
from snakeway.proxy.pool import UpstreamPool
from snakeway.proxy.accesslog import AccessLog
from snakeway.proxy.runtime import Runtime, Shared, build_runtime
from snakeway.proxy.websocket import WebSocketSlots
from snakeway.proxy.wscount import SharedWebSocketCounts
from snakeway.tcp import TcpStream
from snakeway.tls.handshake import accept_tls
from snakeway.tls.certmap import CertEntry
from snakeway.tls.registry import CertRegistry, Served
from snakeway.tls.sni import listener_context
from snakeway.tls.sources import InternalIssuer, load_manual

logger = logging.getLogger("snakeway")

# With several workers: how often each compares every certificate's stamp in the store even though the store's
# generation did not change (a safety net; a change is seen within GENERATION_POLL_SECONDS, see acme/manager.py).
WATCH_INTERVAL = 10.0


async def _reuse_port_listener(interface: str, port: int) -> socket.socket:
    """A listening socket that other worker processes bind too (SO_REUSEPORT):
    the kernel spreads new connections across them."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        await sock.bind((interface, port))
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return socket.socket(fileno=sock.detach())


class Server:
    """A running configuration.

    Args:
      config: the validated configuration.
      loader: re-reads the configuration on reload (raises ConfigError).
      clock: wall time for certificate validity.
      worker: one of several processes sharing the ports (see :mod:`snakeway.supervisor`).
      handoff: where a worker leaves each configuration it applied, for the supervisor.
      ws_counts: the WebSocket counts shared by every worker; None counts in this process.
    """

    def __init__(
        self,
        config: Config,
        loader: Callable[[], Config] | None = None,
        *,
        clock: WallClock | None = None,
        acme_backend: AcmeBackend | None = None,
        cert_store: CertStore | None = None,
        worker: bool = False,
        handoff: ConfigHandoff | None = None,
        ws_counts: SharedWebSocketCounts | None = None,
    ) -> None:
        self._loader = loader
        self._handoff = handoff
        # One of several worker processes sharing the ports (see supervisor.py).
        self.worker = worker
        self.clock = clock or SystemClock()
        upstream = config.server.upstream
        self.shared = Shared(
            pool=UpstreamPool(upstream),
            health=Health(upstream.failure_cooldown_seconds),
            slots=WebSocketSlots(ws_counts),
        )
        self.runtime: Runtime = build_runtime(config, self.shared)
        self.certs = CertRegistry()
        self.internal = InternalIssuer(self.certs, config.server.state_dir, self.clock)
        self.coordinator = self._coordinator(config)
        shared = self.coordinator if self.worker else None
        self.http01 = Http01Tokens(shared)
        self.tlsalpn = TlsAlpnChallenges(shared)
        self.manager = self._cert_manager(config, acme_backend, cert_store)
        self.drain = Drain()
        self._stop = trio.Event()
        self._serving = trio.Event()
        # Cancelled by a shutdown that comes before the server is serving: start-up (issuing
        # certificates, waiting on another worker's leaf lock) can take seconds, never a SIGTERM.
        self._starting = trio.CancelScope()
        self._reload_wanted = trio.Event()
        self._listeners: dict[ListenerKey, trio.CancelScope] = {}
        self.addresses: dict[ListenerKey, tuple[str, int]] = {}
        self._accept: trio.Nursery | None = None
        self._handlers: trio.Nursery | None = None

    def _cert_manager(
        self, config: Config, backend: AcmeBackend | None, store: CertStore | None
    ) -> CertManager | None:
        automation = config.server.tls_automation
        if automation is None:
            return None
        acme = automation.acme
        if store is None:
            store = open_store(automation.cert_store, acme.data_dir, config.server.state_dir)
        if backend is None:
            from snakeway.acme.backend import ClientV2Backend

            backend = ClientV2Backend(acme.directory_url, ca_file=acme.ca_file)
        return CertManager(
            settings=automation,
            certs=managed_certs(config),
            store=store,
            backend=backend,
            registry=self.certs,
            http01=self.http01,
            tlsalpn=self.tlsalpn,
            clock=self.clock,
            coordinator=self.coordinator,
            watch_interval=WATCH_INTERVAL if self.worker else None,
        )

    def _coordinator(self, config: Config) -> Coordinator:
        automation = config.server.tls_automation
        if not self.worker or automation is None or automation.cert_store.type is not StoreType.FILESYSTEM:
            return LocalCoordinator()
        state_dir = config.server.state_dir
        cert_dir = automation.cert_store.cert_dir or state_dir / "certs"
        return FileCoordinator(cert_dir, automation.acme.data_dir or state_dir / "acme")

    # -- control ---------------------------------------------------------

    def shutdown(self) -> None:
        """Stop accepting and let requests in flight finish (``drain_seconds``).

        Before the server is serving, start-up stops where it is and :meth:`serve` returns.
        """
        self._stop.set()
        if not self._serving.is_set():
            self._starting.cancel()

    def request_reload(self) -> None:
        """Reload soon: at once when serving, else once start-up is done.

        Reloads run one at a time; requests made while one runs make one more after it.
        """
        self._reload_wanted.set()

    async def reload(self) -> bool:
        """Re-read the configuration and certificates; on any problem keep the running ones."""
        if self._loader is None:
            return False
        bound: dict[ListenerKey, list[socket.socket]] = {}
        access: tuple[int | None, bool] = (None, False)
        try:
            read_at = stamp()
            config = await trio.to_thread.run_sync(self._loader)
            runtime = build_runtime(config, self.shared, self.runtime)
            manual = await self._load_manual(runtime)
            access = AccessLog.open(config.server.access_log)
            for key, spec in runtime.listeners.items():
                if key not in self._listeners:
                    bound[key] = await self._bind(spec)
            # Nothing below can fail: the new configuration is applied whole.
            await self._apply_certificates(runtime, manual)
        except (ConfigError, SnakewayError, OSError) as exc:
            _discard(access, bound)
            logger.error("reload failed, the running configuration stays:\n%s", exc)
            return False
        except BaseException:  # cancelled by a shutdown
            _discard(access, bound)
            raise
        self.shared.pool.settings = config.server.upstream
        self.shared.health.cooldown = config.server.upstream.failure_cooldown_seconds
        self.runtime = runtime
        self.shared.access.reopen(access, with_pid=config.server.workers > 1)
        for key, listeners in bound.items():
            self._serve_listener(runtime.listeners[key], listeners)
        for key in list(self._listeners):
            if key not in runtime.listeners:
                self._listeners.pop(key).cancel()
                self.addresses.pop(key, None)
                logger.info("stopped listening on %s:%d", *key)
        if self.manager is not None:
            await self.manager.configure(managed_certs(config))
            self.manager.retry_now()
        elif config.server.tls_automation is not None:
            logger.warning("tls_automation was added: restart snakeway to start managing certificates")
        logger.info("configuration reloaded")
        if self._handoff is not None:
            try:
                await trio.to_thread.run_sync(self._handoff.publish, config, read_at)
            except OSError as exc:
                logger.warning("cannot hand the reloaded configuration to the supervisor: %s", exc)
        return True

    # -- running ---------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`shutdown`; ``started()`` once every listener is open.

        A shutdown before then stops start-up where it is (issuing a certificate, waiting for
        another worker's lock) and returns without ``started()``.

        Raises:
          SnakewayError: a certificate cannot be loaded or issued.
          OSError: a listener cannot be opened.
        """
        pid_file = None
        try:
            with self._starting:
                await self._apply_certificates(self.runtime, await self._load_manual(self.runtime))
                server = self.runtime.config.server
                self.shared.access.reopen(AccessLog.open(server.access_log), with_pid=server.workers > 1)
                if not self.worker and server.pid_file is not None:
                    pid_file = server.pid_file
                    pid_file.write_text(f"{os.getpid()}\n")
                await self._serve(task_status)
            if self._starting.cancelled_caught:
                logger.info("stopped before start-up was done")
        finally:
            self.shared.access.close()
            await self.shared.pool.aclose()
            if self.manager is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self.manager.backend.aclose()
            if pid_file is not None:
                pid_file.unlink(missing_ok=True)

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        """The background tasks, the listeners and the reloads; then, once stopped, the drain."""
        async with trio.open_nursery() as root:
            root.start_soon(self.shared.pool.run)
            await root.start(self.internal.run)
            if self.manager is not None:
                await root.start(self.manager.run)
            async with trio.open_nursery() as handlers:
                self._handlers = handlers
                # Reloads run beside the accept loops: a reload may start a listener, and a
                # shutdown stops both (a reload waiting on a certificate does not hold it up).
                async with trio.open_nursery() as accept:
                    self._accept = accept
                    for spec in self.runtime.listeners.values():
                        self._serve_listener(spec, await self._bind(spec))
                    task_status.started()
                    self._serving.set()
                    accept.start_soon(self._run_reloads)
                    await self._stop.wait()
                    accept.cancel_scope.cancel()
                self.drain.close()
                drain = self.runtime.config.server.drain_seconds
                handlers.cancel_scope.deadline = trio.current_time() + drain
            root.cancel_scope.cancel()

    async def _run_reloads(self) -> None:
        """Apply the reloads :meth:`request_reload` asks for, one at a time. Runs until cancelled."""
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted = trio.Event()
            await self.reload()

    async def serve_signals(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """SIGINT/SIGTERM shut down gracefully; SIGHUP reloads. Runs until cancelled.

        The three signals are unblocked once their handlers are installed: a worker starts
        with them blocked (see :mod:`snakeway.supervisor`), and one that arrived meanwhile is
        handled now. This loop never waits for anything but the next signal: a SIGHUP asks
        for a reload (:meth:`request_reload`, applied once serving), so a SIGTERM right
        after it, even during start-up, shuts down at once. Once shutting down, the
        handlers stay so that a late signal cannot end the drain.
        """
        import signal

        wanted = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        with trio.open_signal_receiver(*wanted) as signals:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, wanted)
            task_status.started()
            async for signum in signals:
                if self._stop.is_set():
                    logger.info("%s ignored: shutting down", signal.Signals(signum).name)
                elif signum == signal.SIGHUP:
                    later = "" if self._serving.is_set() else " once started"
                    logger.info("SIGHUP: reloading the configuration%s", later)
                    self.request_reload()
                else:
                    logger.info("%s: shutting down", signal.Signals(signum).name)
                    self.shutdown()

    async def _load_manual(self, runtime: Runtime) -> dict[str, CertEntry]:
        tls_blocks = [tls for spec in runtime.listeners.values() for tls in spec.tls]
        return await load_manual(tls_blocks, now=self.clock.now())

    async def _apply_certificates(self, runtime: Runtime, manual: dict[str, CertEntry]) -> None:
        """Publish ``runtime``'s certificates: manual ones loaded, internal ones issued."""
        self.certs.configure(
            {
                key: Served(tuple(i for tls in spec.tls for i in cert_ids(tls)), default_name(spec))
                for key, spec in runtime.listeners.items()
                if spec.role is Role.HTTPS
            }
        )
        self.certs.update(manual)
        await self.internal.configure([tls for spec in runtime.listeners.values() for tls in spec.tls])

    async def _bind(self, spec: ListenerSpec) -> list[socket.socket]:
        """Listening sockets for ``spec``: plain sockets, which the accept loop owns from then on."""
        try:
            if self.worker:
                return [await _reuse_port_listener(spec.interface, spec.port)]
            listeners = await trio.open_tcp_listeners(spec.port, host=spec.interface)
            return [socket.socket(fileno=listener.socket.detach()) for listener in listeners]
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {spec.url()}: {exc.strerror or exc}") from exc

    def _serve_listener(self, spec: ListenerSpec, sockets: list[socket.socket]) -> None:
        assert self._accept is not None
        sockname = sockets[0].getsockname()
        self.addresses[spec.key] = (sockname[0], sockname[1])
        ctx = ListenerContext(
            key=spec.key,
            runtime=lambda: self.runtime,
            shared=self.shared,
            drain=self.drain,
            challenges=self.http01,
        )
        tls_context = listener_context(self.certs.holder(spec.key)) if spec.role is Role.HTTPS else None
        scope = trio.CancelScope()
        self._listeners[spec.key] = scope
        self._accept.start_soon(self._accept_loop, scope, sockets, ctx, tls_context)
        logger.info("listening on %s", spec.url(sockname[1]))

    async def _accept_loop(
        self,
        scope: trio.CancelScope,
        sockets: list[socket.socket],
        ctx: ListenerContext,
        tls_context: ssl.SSLContext | None,
    ) -> None:
        """Accept on ``sockets`` until ``scope`` is cancelled (shutdown, or a reload that drops
        the listener); the sockets are closed then (snakeway/accept.py)."""
        assert self._handlers is not None
        with scope:
            await serve_sockets(sockets, partial(self._handle, ctx=ctx, tls_context=tls_context), self._handlers)

    async def _handle(
        self, sock: socket.socket, peer: Any, *, ctx: ListenerContext, tls_context: ssl.SSLContext | None
    ) -> None:
        # The send timeout is the configuration's when the connection is accepted, for its whole
        # life, as are the connection's other client settings (Http1Connection).
        stream = TcpStream.accepted(sock, send_timeout=ctx.runtime().config.server.client.send_timeout_seconds)
        try:
            await self._serve_connection(stream, peer, ctx, tls_context)
        finally:
            stream.socket.close()  # usually closed already; never waits, whatever state we are in

    async def _serve_connection(
        self, stream: TcpStream, peer: Any, ctx: ListenerContext, tls_context: ssl.SSLContext | None
    ) -> None:
        try:
            # accept()'s address: (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6.
            client_ip, client_port = (peer[0], peer[1]) if isinstance(peer, tuple) else (str(peer), 0)
            transport: trio.abc.Stream = stream
            if tls_context is not None:
                spec = ctx.spec
                tls_stream = await accept_tls(
                    stream,
                    tls_context,
                    timeout=spec.handshake_timeout,
                    client=f"{client_ip}:{client_port}",
                    challenges=self.tlsalpn,
                )
                if tls_stream is None:
                    return
                transport = tls_stream
            await Http1Connection(transport, ctx, client_ip).run()
        except Exception:  # the per-connection error boundary; Cancelled passes
            logger.exception("connection handler crashed")


def _discard(access: tuple[int | None, bool], bound: dict[ListenerKey, list[socket.socket]]) -> None:
    """Close what a reload that did not finish opened: the access log file and new listening sockets."""
    if access[1] and access[0] is not None:
        os.close(access[0])
    for sockets in bound.values():
        for sock in sockets:
            sock.close()

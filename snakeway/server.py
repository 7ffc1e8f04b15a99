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
configuration or certificates leaves the running one in place: a reload is
prepared whole, then committed with assignments only (see :mod:`snakeway.build`).
Reloads run one at a time in a task of their own; one asked for during start-up
is applied once serving, and a shutdown cancels the one in progress. A shutdown
during start-up stops start-up where it is.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

from snakeway import logs
from snakeway.accept import Handler, serve_sockets
from snakeway.acme.backend import AcmeBackend
from snakeway.acme.challenges import Http01Tokens
from snakeway.acme.managed import managed_certs
from snakeway.acme.store import CertStore
from snakeway.acme.tlsalpn import TlsAlpnChallenges
from snakeway.admin import listener as admin_listener
from snakeway.admin.api import AdminApi
from snakeway.admin.share import SharedFigures
from snakeway.binder import bind
from snakeway.build import Builder, Prepared, cert_manager, coordinator, is_shared
from snakeway.clock import SystemClock, WallClock
from snakeway.config.model import Config
from snakeway.connection import handle
from snakeway.errors import ConfigError, SnakewayError
from snakeway.handoff import ConfigHandoff, stamp
from snakeway.listeners import ListenerKey, ListenerSpec, Role
from snakeway.preflight import state_dir_problem
from snakeway.proxy.balance import Health
from snakeway.proxy.listener import Drain, ListenerContext
from snakeway.proxy.pool import UpstreamPool
from snakeway.proxy.runtime import Runtime, Shared
from snakeway.proxy.websocket import WebSocketSlots
from snakeway.proxy.wscount import SharedWebSocketCounts
from snakeway.tls.registry import CertRegistry
from snakeway.tls.sni import listener_context
from snakeway.tls.sources import InternalIssuer

logger = logging.getLogger("snakeway")


@dataclass(frozen=True)
class ReloadOutcome:
    """How the ``number``-th reload of this process ended, at ``at`` (Unix time): applied, or why not."""

    number: int
    at: float
    applied: bool
    error: str | None

class Server:
    """A running configuration.

    Args:
      config: the validated configuration.
      loader: re-reads the configuration on reload (raises ConfigError).
      clock: wall time for certificate validity.
      worker: one of several processes sharing the ports (see :mod:`snakeway.supervisor`).
      handoff: where a worker leaves each configuration it applied, for the supervisor.
      ws_counts: the WebSocket counts shared by every worker; None counts in this process.
      figures: where this worker leaves its figures for the admin API of its siblings (several workers).
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
        figures: SharedFigures | None = None,
    ) -> None:
        self._loader = loader
        self._handoff = handoff
        # One of several worker processes sharing the ports (see supervisor.py); its supervisor is its parent.
        self.worker = worker
        self._supervisor = os.getppid() if worker else None
        self.clock = clock or SystemClock()
        upstream = config.server.upstream
        self.shared = Shared(
            pool=UpstreamPool(upstream),
            health=Health(upstream.failure_cooldown_seconds),
            slots=WebSocketSlots(ws_counts),
        )
        self.certs = CertRegistry()
        self.internal = InternalIssuer(self.certs, config.server.state_dir, self.clock)
        self.builder = Builder(self.shared, self.certs, self.internal, self.clock, reuse_port=worker)
        self.runtime: Runtime = self.builder.runtime(config)
        self.coordinator = coordinator(config, cert_store)
        shared = self.coordinator if is_shared(self.coordinator) else None
        self.http01 = Http01Tokens(shared)
        self.tlsalpn = TlsAlpnChallenges(shared)
        # Set once every listener is bound: the plain listener answers HTTP-01, the TLS ones TLS-ALPN-01.
        self._listening = trio.Event()
        self.manager = cert_manager(
            config, self.certs, self.http01, self.tlsalpn, self.clock, self.coordinator,
            backend=acme_backend, store=cert_store, listening=self._listening,
            acme_counts=self.shared.counters.acme_requests, attempts=self.shared.counters.renewal_attempts,
        )
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
        self.figures = figures
        self.admin = AdminApi(self, figures)
        self.last_reload: ReloadOutcome | None = None
        self._reloads_started = 0
        self._reload_ended = trio.Event()

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

    async def wait_serving(self) -> None:
        """Return once every listener is open (never, if start-up fails or is stopped)."""
        await self._serving.wait()

    async def reload(self) -> bool:
        """Re-read the configuration and certificates; on any problem keep the running ones.

        Everything new is prepared first (:meth:`Builder.prepare`); only if all of it succeeded is it
        applied, by assignments that cannot fail, and what it replaced closed.
        """
        self._reloads_started += 1
        number = self._reloads_started
        try:
            applied = await self._reload()
        except (ConfigError, SnakewayError, OSError, ValueError) as exc:
            logger.error("reload failed, the running configuration stays:\n%s", exc)
            self._reload_done(number, str(exc))
            return False
        self._reload_done(number, None if applied else "there is no configuration file to read again")
        return applied

    async def reload_everywhere(self, timeout: float) -> ReloadOutcome | None:  # noqa: ASYNC109 - an answer, not an error
        """Reload every worker as SIGHUP does and return this one's outcome (None: not ended in ``timeout``).

        A worker asks its supervisor (the parent process), which sends every worker SIGHUP; a single process
        reloads itself. The outcome is that of the first reload that starts after this call.
        """
        after = self._reloads_started
        if self._supervisor is not None:
            if os.getppid() != self._supervisor:  # never signal whoever adopted this orphan
                return ReloadOutcome(after, time.time(), False, "the supervisor is gone; this worker is stopping")
            os.kill(self._supervisor, signal.SIGHUP)
        else:
            self.request_reload()
        with trio.move_on_after(timeout):
            while self.last_reload is None or self.last_reload.number <= after:
                await self._reload_ended.wait()
            return self.last_reload
        return None

    def _reload_done(self, number: int, error: str | None) -> None:
        self.last_reload = ReloadOutcome(number, time.time(), error is None, error)
        self._reload_ended.set()
        self._reload_ended = trio.Event()

    async def _reload(self) -> bool:
        if self._loader is None:
            return False
        read_at = stamp()
        config = await trio.to_thread.run_sync(self._loader)
        runtime = self.builder.runtime(config, self.runtime)
        new = [spec for key, spec in runtime.listeners.items() if key not in self._listeners]
        prepared = await self.builder.prepare(runtime, new)
        self._commit(prepared)
        logger.info("configuration reloaded")
        if self.manager is not None:
            await self.manager.configure(managed_certs(config), config.server.tls_automation)
            self.manager.retry_now()
        elif config.server.tls_automation is not None:
            logger.warning("tls_automation was added: restart snakeway to start managing certificates")
        if self._handoff is not None:
            try:
                await trio.to_thread.run_sync(self._handoff.publish, config, read_at)
            except OSError as exc:
                logger.warning("cannot hand the reloaded configuration to the supervisor: %s", exc)
        return True

    def _commit(self, prepared: Prepared) -> None:
        """Apply ``prepared``: one reference swap each, nothing that can fail; then stop dropped listeners."""
        self.builder.commit(prepared)
        self.runtime = runtime = prepared.runtime
        for key, sockets in prepared.bound.items():
            self._serve_listener(runtime.listeners[key], sockets, prepared.tls_contexts.get(key))
        prepared.bound = {}
        for key in list(self._listeners):
            if key not in runtime.listeners:
                self._listeners.pop(key).cancel()
                self.addresses.pop(key, None)
                logger.info("stopped listening on %s:%d", *key)

    # -- running ---------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`shutdown`; ``started()`` once every listener is open.

        A shutdown before then stops start-up where it is (issuing a certificate, waiting for
        another worker's lock) and returns without ``started()``.

        Raises:
          SnakewayError: a certificate cannot be loaded or issued.
          OSError: a listener cannot be opened; ``state_dir`` cannot be used (and something needs it).
        """
        pid_file = None
        try:
            with self._starting:
                state_dir = self.runtime.config.server.state_dir
                if why := state_dir_problem(self.runtime.config):  # say so now, not when a certificate needs it
                    raise OSError(errno.EINVAL, why, str(state_dir))
                self.builder.commit(await self.builder.prepare(self.runtime, []))
                server = self.runtime.config.server
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
            if self._serving.is_set():  # the last line of a shutdown; a supervisor says it once for its workers
                logger.log(logging.DEBUG if self.worker else logging.INFO, "stopped")

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        """The background tasks, the listeners and the reloads; then, once stopped, the drain."""
        async with trio.open_nursery() as root:
            root.start_soon(self.shared.pool.run)
            if self.figures is not None:
                await self._share_figures(root, self.figures)
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
                        sockets = await bind(spec, reuse_port=self.worker)
                        tls = listener_context(self.certs.holder(spec.key)) if spec.tls else None
                        self._serve_listener(spec, sockets, tls)
                    self._listening.set()  # the certificate manager may order now
                    task_status.started()
                    self._serving.set()
                    accept.start_soon(self._run_reloads)
                    await self._stop.wait()
                    accept.cancel_scope.cancel()
                self.drain.close()
                drain = self.runtime.config.server.drain_seconds
                handlers.cancel_scope.deadline = trio.current_time() + drain
            root.cancel_scope.cancel()

    async def _share_figures(self, nursery: trio.Nursery, figures: SharedFigures) -> None:
        """Go on from the counts of the worker this one replaces, and write this one's figures from now on."""
        try:
            earlier = await trio.to_thread.run_sync(figures.predecessor)
        except OSError as exc:
            logger.warning("cannot read the figures of the worker this one replaces: %s", exc)
            earlier = None
        if earlier is not None:
            self.shared.counters.add(earlier)
        nursery.start_soon(figures.run, self.admin.shared_snapshot)

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

        wanted = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        with trio.open_signal_receiver(*wanted) as signals:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, wanted)
            task_status.started()
            level = logs.said_once(logging.INFO)  # a worker's supervisor has said it, for every worker
            async for signum in signals:
                if self._stop.is_set():
                    logger.log(level, "%s ignored: shutting down", signal.Signals(signum).name)
                elif signum == signal.SIGHUP:
                    later = "" if self._serving.is_set() else " once started"
                    logger.log(level, "SIGHUP: reloading the configuration%s", later)
                    self.request_reload()
                else:
                    logger.log(level, "%s: shutting down", signal.Signals(signum).name)
                    self.shutdown()

    def _serve_listener(
        self, spec: ListenerSpec, sockets: list[socket.socket], tls_context: ssl.SSLContext | None
    ) -> None:
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
        scope = trio.CancelScope()
        self._listeners[spec.key] = scope
        if spec.role is Role.ADMIN:
            handler: Handler = partial(admin_listener.handle, self.admin, spec, tls_context, self.tlsalpn)
        else:
            handler = partial(handle, ctx, tls_context, self.tlsalpn)
        self._accept.start_soon(self._accept_loop, scope, sockets, handler)
        logger.info("listening on %s", spec.url(sockname[1]))

    async def _accept_loop(self, scope: trio.CancelScope, sockets: list[socket.socket], handler: Handler) -> None:
        """Accept on ``sockets`` until ``scope`` is cancelled (shutdown, or a reload that drops
        the listener); the sockets are closed then (snakeway/accept.py)."""
        assert self._handlers is not None
        with scope:
            await serve_sockets(sockets, handler, self._handlers)

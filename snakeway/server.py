"""The root of a running snakeway: listeners, reloads and graceful shutdown.

One nursery supervises everything. The accept loops run in a nursery of
their own so that shutdown can stop accepting first; connection handlers
run in a third, which gets ``drain_seconds`` to finish the requests in
flight before it is cancelled. Idle keep-alive connections close at once.

A reload swaps the :class:`~snakeway.proxy.runtime.Runtime` reference: the
next request on any connection, old or new, sees the new routes, services
and upstreams. Listeners for addresses that appear are opened, and those
for addresses that disappear stop accepting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial

import trio

from snakeway.config.model import Bind, Config
from snakeway.errors import ConfigError
from snakeway.proxy.balance import Health
from snakeway.proxy.http1 import Drain, Http1Connection, ListenerContext
from snakeway.proxy.pool import UpstreamPool
from snakeway.proxy.runtime import Runtime, Shared, binds, build_runtime

logger = logging.getLogger("snakeway")


class Server:
    """A running configuration.

    Args:
      config: the validated configuration.
      loader: re-reads the configuration on reload (raises ConfigError).
    """

    def __init__(self, config: Config, loader: Callable[[], Config] | None = None) -> None:
        self._loader = loader
        upstream = config.server.upstream
        self.shared = Shared(
            pool=UpstreamPool(upstream), health=Health(upstream.failure_cooldown_seconds)
        )
        self.runtime: Runtime = build_runtime(config, self.shared)
        self.drain = Drain()
        self._stop = trio.Event()
        self._listeners: dict[Bind, trio.CancelScope] = {}
        self.addresses: dict[Bind, tuple[str, int]] = {}
        self._accept: trio.Nursery | None = None
        self._handlers: trio.Nursery | None = None

    # -- control ---------------------------------------------------------

    def shutdown(self) -> None:
        """Stop accepting and let requests in flight finish (``drain_seconds``)."""
        self._stop.set()

    async def reload(self) -> bool:
        """Re-read the configuration; on any problem keep the running one."""
        if self._loader is None:
            return False
        try:
            config = await trio.to_thread.run_sync(self._loader)
        except ConfigError as exc:
            logger.error("reload failed, the running configuration stays:\n%s", exc)
            return False
        except OSError as exc:
            logger.error("reload failed, the running configuration stays: %s", exc)
            return False
        try:
            for bind in binds(config):
                if bind not in self._listeners:
                    await self._open(bind)
        except OSError as exc:
            logger.error("reload failed, the running configuration stays: %s", exc)
            return False
        for bind in list(self._listeners):
            if bind not in binds(config):
                self._listeners.pop(bind).cancel()
                self.addresses.pop(bind, None)
                logger.info("stopped listening on %s:%d", bind.url_host, bind.port)
        self.runtime = build_runtime(config, self.shared, self.runtime)
        logger.info("configuration reloaded")
        return True

    # -- running ---------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`shutdown`; ``started()`` once every listener is open."""
        pid_file = self.runtime.config.server.pid_file
        if pid_file is not None:
            pid_file.write_text(f"{os.getpid()}\n")
        try:
            async with trio.open_nursery() as root:
                root.start_soon(self.shared.pool.run)
                async with trio.open_nursery() as handlers:
                    self._handlers = handlers
                    async with trio.open_nursery() as accept:
                        self._accept = accept
                        for bind in binds(self.runtime.config):
                            await self._open(bind)
                        task_status.started()
                        await self._stop.wait()
                        accept.cancel_scope.cancel()
                    self.drain.close()
                    drain = self.runtime.config.server.drain_seconds
                    handlers.cancel_scope.deadline = trio.current_time() + drain
                root.cancel_scope.cancel()
        finally:
            await self.shared.pool.aclose()
            if pid_file is not None:
                pid_file.unlink(missing_ok=True)

    async def serve_signals(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """SIGINT/SIGTERM shut down gracefully; SIGHUP reloads."""
        import signal

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    logger.info("SIGHUP: reloading the configuration")
                    await self.reload()
                else:
                    logger.info("%s: shutting down", signal.Signals(signum).name)
                    self.shutdown()
                    return

    async def _open(self, bind: Bind) -> None:
        assert self._accept is not None
        listeners = await trio.open_tcp_listeners(bind.port, host=bind.interface)
        sockname = listeners[0].socket.getsockname()
        self.addresses[bind] = (sockname[0], sockname[1])
        ctx = ListenerContext(
            bind=bind, scheme="http", runtime=lambda: self.runtime, shared=self.shared, drain=self.drain
        )
        scope = trio.CancelScope()
        self._listeners[bind] = scope
        self._accept.start_soon(self._accept_loop, scope, listeners, ctx)
        host = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
        logger.info("listening on %s://%s:%d", ctx.scheme, host, sockname[1])

    async def _accept_loop(
        self, scope: trio.CancelScope, listeners: list[trio.SocketListener], ctx: ListenerContext
    ) -> None:
        assert self._handlers is not None
        with scope:
            await trio.serve_listeners(
                partial(self._handle, ctx=ctx), listeners, handler_nursery=self._handlers
            )
        for listener in listeners:
            await listener.aclose()

    async def _handle(self, stream: trio.SocketStream, *, ctx: ListenerContext) -> None:
        try:
            try:
                peer = stream.socket.getpeername()
                client_ip = peer[0] if isinstance(peer, tuple) else str(peer)
            except OSError:
                client_ip = "-"
            await Http1Connection(stream, ctx, client_ip).run()
        except Exception:  # the per-connection error boundary; Cancelled passes
            logger.exception("connection handler crashed")


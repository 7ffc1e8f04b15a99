"""Several worker processes behind the same ports, supervised by one parent.

With ``server.workers = N`` above 1, ``python -m snakeway serve`` becomes a
small supervisor: it starts N copies of itself (``serve --worker``), each
with its own trio loop, each binding every listening port with
``SO_REUSEPORT`` so the kernel spreads new connections across them. The
parent

* forwards SIGHUP (reload) to every worker, and SIGINT/SIGTERM as SIGTERM
  (graceful shutdown), then waits for them and exits 0;
* restarts a worker that dies, unless it keeps dying right after start
  (a broken configuration or a port in use): then it gives up and exits 1;
* writes the pid file, and creates the local CA before any worker starts,
  so workers never race to create two different roots.

Workers share certificates through the store: see
:mod:`snakeway.acme.coordination`.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import trio

from snakeway.config.model import Config, TlsMode

logger = logging.getLogger("snakeway.supervisor")

# A worker that exits this soon after starting, this many times in a row, is not restarted again.
QUICK_EXIT_SECONDS = 2.0
QUICK_EXITS_TO_GIVE_UP = 3
STOP_SECONDS_EXTRA = 5.0


class Supervisor:
    def __init__(self, config_path: Path, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.workers: dict[int, trio.Process] = {}
        self.stopping = False
        self.failed = False

    async def run(self) -> int:
        server = self.config.server
        if any(i.bind.tls and i.bind.tls.mode is TlsMode.INTERNAL for i in self.config.ingresses):
            from snakeway.tls.internal_ca import LocalCA

            await trio.to_thread.run_sync(LocalCA.load_or_create, server.state_dir)
        if server.pid_file is not None:
            server.pid_file.write_text(f"{_pid()}\n")
        try:
            logger.info("starting %d workers", server.workers)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals, nursery)
                async with trio.open_nursery() as keepers:
                    for slot in range(server.workers):
                        keepers.start_soon(self._keep, slot, nursery)
                nursery.cancel_scope.cancel()
        finally:
            if server.pid_file is not None:
                server.pid_file.unlink(missing_ok=True)
        return 1 if self.failed else 0

    async def _keep(self, slot: int, nursery: trio.Nursery) -> None:
        quick_exits = 0
        while not self.stopping:
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "snakeway", "serve", "--config", str(self.config_path), "--worker"],
                stdin=subprocess.DEVNULL,
            )
            self.workers[slot] = process
            code = await process.wait()
            del self.workers[slot]
            if self.stopping:
                return
            quick_exits = quick_exits + 1 if trio.current_time() - started < QUICK_EXIT_SECONDS else 0
            if quick_exits >= QUICK_EXITS_TO_GIVE_UP:
                logger.error("worker %d keeps exiting at start (code %s); stopping snakeway", slot, code)
                self.failed = True
                self._stop_all()
                return
            logger.warning("worker %d (pid %d) exited with code %s; starting a new one", slot, process.pid, code)
            if quick_exits:
                await trio.sleep(0.5 * quick_exits)

    async def _signals(self, nursery: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    logger.info("SIGHUP: reloading every worker")
                    for process in list(self.workers.values()):
                        process.send_signal(signal.SIGHUP)
                else:
                    logger.info("%s: shutting down the workers", signal.Signals(signum).name)
                    self._stop_all()
                    nursery.start_soon(self._kill_stragglers)

    def _stop_all(self) -> None:
        self.stopping = True
        for process in list(self.workers.values()):
            process.send_signal(signal.SIGTERM)

    async def _kill_stragglers(self) -> None:
        await trio.sleep(self.config.server.drain_seconds + STOP_SECONDS_EXTRA)
        for process in list(self.workers.values()):
            logger.warning("worker pid %d did not stop in time; killing it", process.pid)
            process.kill()


def _pid() -> int:
    import os

    return os.getpid()

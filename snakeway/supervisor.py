"""Several worker processes behind the same ports, supervised by one parent.

With ``server.workers = N`` above 1, ``python -m snakeway serve`` becomes a
small supervisor. It imports everything a worker needs and loads the
configuration once, then *forks* N workers: a worker starts in milliseconds
(no second interpreter start-up, no second parse of the configuration) and
shares the parent's pages until it writes them. Each worker runs its own trio
loop and binds every listening port with ``SO_REUSEPORT``, so the kernel
spreads new connections across them. The parent

* forwards SIGHUP (reload) to every worker, and SIGINT/SIGTERM as SIGTERM
  (graceful shutdown), then waits for them and exits 0; a worker that is
  still running ``drain_seconds`` + 5 s later is killed;
* restarts a worker that dies, unless it keeps dying right after start
  (a broken configuration or a port in use): then it gives up and exits 1;
* writes the pid file, and creates the local CA before any worker starts,
  so workers never race to create two different roots.

The parent never runs trio and never starts a thread, so forking is safe: it
blocks the signals it handles and takes them one at a time with
``sigtimedwait``. Workers notice a parent that died (even by SIGKILL) and
shut down. Workers share certificates through the store: see
:mod:`snakeway.acme.coordination`.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from snakeway.config.model import Config, TlsMode

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger("snakeway.supervisor")

# A worker that exits this soon after starting, this many times in a row, is not restarted again.
QUICK_EXIT_SECONDS = 2.0
QUICK_EXITS_TO_GIVE_UP = 3
STOP_SECONDS_EXTRA = 5.0
_SIGNALS = {signal.SIGCHLD, signal.SIGHUP, signal.SIGINT, signal.SIGTERM}


@dataclass
class _Slot:
    pid: int | None = None
    started: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None


class Supervisor:
    """Forks ``config.server.workers`` processes that each call ``run_worker()`` and exit with what it returns."""

    def __init__(self, config: Config, run_worker: Callable[[], int]) -> None:
        self.config = config
        self.run_worker = run_worker
        self.slots = [_Slot() for _ in range(config.server.workers)]
        self.stopping = False
        self.failed = False
        self.kill_at: float | None = None

    def run(self) -> int:
        server = self.config.server
        if any(i.bind.tls and i.bind.tls.mode is TlsMode.INTERNAL for i in self.config.ingresses):
            from snakeway.tls.internal_ca import LocalCA

            LocalCA.load_or_create(server.state_dir)
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        if server.pid_file is not None:
            server.pid_file.write_text(f"{os.getpid()}\n")
        # What was loaded so far (code, configuration) lives as long as the process: out of the
        # collector's sight, it is neither walked by each full collection nor copied into every
        # worker when a collection touches it (the advice of the gc module's documentation).
        gc.freeze()
        try:
            logger.info("starting %d workers", len(self.slots))
            for number in range(len(self.slots)):
                self._fork(number, previous_mask)
            while self._running():
                self._wait_and_handle(previous_mask)
        finally:
            if server.pid_file is not None:
                server.pid_file.unlink(missing_ok=True)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        return 1 if self.failed else 0

    # --- the loop ----------------------------------------------------------------------------------

    def _running(self) -> bool:
        return any(slot.pid is not None for slot in self.slots) or (
            not self.stopping and any(slot.restart_at is not None for slot in self.slots)
        )

    def _wait_and_handle(self, previous_mask: set[signal.Signals]) -> None:
        now = time.monotonic()
        deadlines = [slot.restart_at for slot in self.slots if slot.restart_at is not None and not self.stopping]
        if self.kill_at is not None:
            deadlines.append(self.kill_at)
        # A timeout at least every second, so a lost SIGCHLD can never leave a dead worker unnoticed.
        timeout = max(0.0, min([now + 1.0, *deadlines]) - now)
        info = signal.sigtimedwait(_SIGNALS, timeout)
        if info is not None and info.si_signo == signal.SIGHUP:
            logger.info("SIGHUP: reloading every worker")
            self._signal_all(signal.SIGHUP)
        elif info is not None and info.si_signo in (signal.SIGINT, signal.SIGTERM):
            logger.info("%s: shutting down the workers", signal.Signals(info.si_signo).name)
            self._stop_all()
        self._reap()
        now = time.monotonic()
        if self.kill_at is not None and now >= self.kill_at:
            for slot in self.slots:
                if slot.pid is not None:
                    logger.warning("worker pid %d did not stop in time; killing it", slot.pid)
                    _kill(slot.pid, signal.SIGKILL)
            self.kill_at = None
        for number, slot in enumerate(self.slots):
            if not self.stopping and slot.restart_at is not None and now >= slot.restart_at:
                self._fork(number, previous_mask)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for number, slot in enumerate(self.slots):
                if slot.pid == pid:
                    self._exited(number, slot, os.waitstatus_to_exitcode(status))

    def _exited(self, number: int, slot: _Slot, code: int) -> None:
        slot.pid = None
        if self.stopping:
            return
        now = time.monotonic()
        slot.quick_exits = slot.quick_exits + 1 if now - slot.started < QUICK_EXIT_SECONDS else 0
        if slot.quick_exits >= QUICK_EXITS_TO_GIVE_UP:
            logger.error("worker %d keeps exiting at start (code %s); stopping snakeway", number, code)
            self.failed = True
            self._stop_all()
            return
        logger.warning("worker %d exited with code %s; starting a new one", number, code)
        slot.restart_at = now + 0.5 * slot.quick_exits

    def _signal_all(self, signum: signal.Signals) -> None:
        for slot in self.slots:
            if slot.pid is not None:
                _kill(slot.pid, signum)

    def _stop_all(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.kill_at = time.monotonic() + self.config.server.drain_seconds + STOP_SECONDS_EXTRA
        self._signal_all(signal.SIGTERM)

    # --- a worker ----------------------------------------------------------------------------------

    def _fork(self, number: int, previous_mask: set[signal.Signals]) -> None:
        slot = self.slots[number]
        slot.restart_at = None
        slot.started = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            slot.pid = pid
            return
        code = 1
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            code = self.run_worker()
        except BaseException:
            logger.exception("worker %d failed", number)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _kill(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # exited a moment ago; reaped on the next round

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
  still running ``drain_seconds`` + 5 s later is killed; a SIGHUP during
  the shutdown is not forwarded (workers ignore one too);
* stops, and exits 1, when a worker could not start because of a mistake (a
  port in use, a certificate that does not match its key): the worker says
  why through the private directory below instead of printing it, and the
  parent prints that once, however many workers met the same mistake, and
  restarts none (see :mod:`snakeway.handoff`). The workers still starting
  then are killed, those already serving stop gracefully;
* restarts a worker that dies: at once if it ran for a while, else after a
  back-off that doubles with each death at start in a row (0.5 s, 1 s, 2 s...,
  at most 10 s), whatever killed it. If it keeps *failing* right after start
  for another reason (a crash), it gives up and exits 1. A
  worker killed by SIGKILL, SIGTERM, SIGINT or SIGHUP (an operator's
  ``kill``, the OOM killer) did not fail by itself and never counts towards
  giving up; one that crashed on a signal (SIGSEGV, SIGABRT...) does (see
  :mod:`snakeway.restarts`);
* writes the pid file, and creates the local CA before any worker starts,
  so workers never race to create two different roots.

Reloads happen in the workers; the parent only forwards SIGHUP. A worker
started later must still serve what the others serve, so the parent keeps a
private directory under ``state_dir`` (mode 0700, made before the first fork,
removed on exit; one left by a supervisor that was killed is removed by the
next: :mod:`snakeway.rundir`) in which each worker that applied a reload
leaves the configuration it applied (see :mod:`snakeway.handoff`); a reload
that failed leaves nothing. Before each fork, and at least once a second,
the parent adopts the newest one, and a new worker starts from it. Certificates are not handed over: a new worker
reads manual certificate files and ACME certificates (from the store) when
it starts, and issues internal ones from the local CA, all per the adopted
configuration. A worker forked after the parent forwarded a SIGHUP but
before the reload was published missed that SIGHUP: once the parent sees a
configuration newer than the one it forked the worker with, it sends the
worker a SIGHUP of its own.

The ``ws_max_connections`` counts are shared by every worker through an
anonymous shared memory map made before the first fork
(:mod:`snakeway.proxy.wscount`); the parent gives back a dead worker's
WebSocket slots before starting its replacement.

The parent never runs trio and never starts a thread, so forking is safe: it
blocks the signals it handles and takes them one at a time with
``sigtimedwait``. A new worker keeps SIGHUP, SIGINT and SIGTERM blocked until
its trio loop has installed its handlers (:meth:`snakeway.server.Server.serve_signals`),
so a SIGHUP that reaches it meanwhile is a reload, not its death. Workers
notice a parent that died (even by SIGKILL) and shut down. Workers share
certificates through the store: see :mod:`snakeway.acme.coordination`.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from snakeway import logs
from snakeway.config.model import Config, TlsMode
from snakeway.handoff import START_FAILED, ConfigHandoff
from snakeway.proxy.wscount import SharedWebSocketCounts
from snakeway.restarts import Streak, after_death, killed
from snakeway.rundir import RunDirectory

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger("snakeway.supervisor")

STOP_SECONDS_EXTRA = 5.0
_SIGNALS = {signal.SIGCHLD, signal.SIGHUP, signal.SIGINT, signal.SIGTERM}
# Blocked in a new worker until its own handlers are installed (Server.serve_signals unblocks them).
WORKER_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM}


@dataclass(frozen=True)
class WorkerEnv:
    """What a worker gets from the supervisor besides its configuration."""

    handoff: ConfigHandoff
    ws_counts: SharedWebSocketCounts
    number: int = 0  # the worker's slot, 0 to workers - 1
    run_dir: Path | None = None  # the supervisor's private directory (snakeway/rundir.py)


@dataclass
class _Slot:
    pid: int | None = None
    started: float = 0.0
    forked_at: int = 0  # time.monotonic_ns(), comparable with the stamps of the handoff
    config_stamp: int = 0  # the newest configuration this worker is known to run
    streak: Streak = Streak()  # its workers' deaths at start, in a row
    restart_at: float | None = None


class Supervisor:
    """Forks ``config.server.workers`` processes that each exit with what ``run_worker(config, env)`` returns."""

    def __init__(self, config: Config, run_worker: Callable[[Config, WorkerEnv], int]) -> None:
        self.config = config
        self.config_stamp = 0
        self.run_worker = run_worker
        self.slots = [_Slot() for _ in range(config.server.workers)]
        self.stopping = False
        self.failed = False
        self.why_failed: list[str] = []  # the one line (or lines) of a worker that could not start
        self.announced = False  # "N workers serving" was logged
        self.kill_at: float | None = None
        self.sighup_at = 0  # time.monotonic_ns() of the last SIGHUP forwarded
        self.private = RunDirectory.create(config.server.state_dir)
        try:
            self.handoff = ConfigHandoff(self.private.path)
            self.ws_counts = SharedWebSocketCounts(len(self.slots), self.private.path / "websockets.lock")
        except BaseException:
            self.private.remove()
            raise

    def run(self) -> int:
        """Run the workers until shutdown; 0, or 1 if one could not start or they kept failing at start."""
        try:
            return self._run()
        finally:  # only in the supervisor: a worker leaves through os._exit
            self.ws_counts.close()
            self.private.remove()

    def _run(self) -> int:
        server = self.config.server
        admin = self.config.admin
        if any(i.bind.tls and i.bind.tls.mode is TlsMode.INTERNAL for i in self.config.ingresses) or (
            admin is not None and admin.internal_tls
        ):
            from snakeway.tls.internal_ca import LocalCA

            ca = LocalCA.load_or_create(server.state_dir)
            logger.info("local CA: %s (python -m snakeway trust)", ca.root_path)  # once, not by each worker
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        if server.pid_file is not None:
            server.pid_file.write_text(f"{os.getpid()}\n")
        # What was loaded so far (code, configuration) lives as long as the process: out of the
        # collector's sight, it is neither walked by each full collection nor copied into every
        # worker when a collection touches it (the advice of the gc module's documentation).
        gc.freeze()
        try:
            for number in range(len(self.slots)):
                self._fork(number, previous_mask)
            while self._running():
                self._wait_and_handle(previous_mask)
        finally:
            if server.pid_file is not None:
                server.pid_file.unlink(missing_ok=True)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
            if not self.failed:  # the last line of a shutdown, once every worker has exited
                logger.info("stopped")
            # After every worker has exited, so that it is the last thing said (with --debug, after the workers'
            # tracebacks).
            for line in self.why_failed:
                print(line, file=sys.stderr)
            sys.stderr.flush()
        return 1 if self.failed else 0

    # --- the loop ----------------------------------------------------------------------------------

    def _running(self) -> bool:
        return any(slot.pid is not None for slot in self.slots) or (
            not self.stopping and any(slot.restart_at is not None for slot in self.slots)
        )

    def _wait_and_handle(self, previous_mask: set[int | signal.Signals]) -> None:
        now = time.monotonic()
        deadlines = [slot.restart_at for slot in self.slots if slot.restart_at is not None and not self.stopping]
        if self.kill_at is not None:
            deadlines.append(self.kill_at)
        # A timeout at least every second, so a lost SIGCHLD can never leave a dead worker unnoticed.
        timeout = max(0.0, min([now + 1.0, *deadlines]) - now)
        info = signal.sigtimedwait(_SIGNALS, timeout)
        if info is not None and info.si_signo == signal.SIGHUP and not self.stopping:
            logger.info("SIGHUP: reloading every worker")
            self.sighup_at = time.monotonic_ns()
            self._signal_all(signal.SIGHUP)
        elif info is not None and info.si_signo in (signal.SIGINT, signal.SIGTERM):
            logger.info("%s: shutting down the workers", signal.Signals(info.si_signo).name)
            self._stop_all()
        self._reap()
        if not self.stopping:
            self._adopt_newest()
            self._announce()
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

    def _adopt_newest(self) -> None:
        """Take the newest configuration a worker applied; reload workers that were forked too early."""
        published = self.handoff.newest()
        if published is None:
            return
        for slot in self.slots:
            if slot.pid == published.pid:
                slot.config_stamp = max(slot.config_stamp, published.stamp)
        if published.stamp > self.config_stamp:
            config = self.handoff.load(published)
            if config is None:
                published.path.unlink(missing_ok=True)
                return
            self.config, self.config_stamp = config, published.stamp
        for number, slot in enumerate(self.slots):
            if slot.pid is not None and slot.config_stamp < self.config_stamp and slot.forked_at > self.sighup_at:
                logger.info("worker %d started before the last reload was applied; reloading it", number)
                slot.config_stamp = self.config_stamp
                _kill(slot.pid, signal.SIGHUP)

    def _announce(self) -> None:
        """Once, when every worker of the first start is serving: say so."""
        if not self.announced and all(s.pid is not None and self.handoff.has_started(s.pid) for s in self.slots):
            self.announced = True
            logger.info("%d workers serving", len(self.slots))

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
        pid, slot.pid = slot.pid, None
        self.ws_counts.give_back(number)
        why: list[str] = []
        if pid is not None:
            why = self.handoff.failure(pid) if code == START_FAILED else []
            self.handoff.forget(pid)
        if self.stopping:
            return
        if code == START_FAILED:
            self._failed_at_start(number, why)
            return
        now = time.monotonic()
        slot.streak, delay = after_death(slot.streak, lived=now - slot.started, code=code)
        if delay is None:
            logger.error("worker %d keeps exiting at start (code %s); stopping snakeway", number, code)
            self.failed = True
            self._stop_all()
            return
        how = f"was killed by {signal.Signals(-code).name}" if killed(code) else f"exited with code {code}"
        when = f" in {delay:g} s" if delay else ""
        logger.warning("worker %d %s; starting a new one%s", number, how, when)
        slot.restart_at = now + delay

    def _failed_at_start(self, number: int, why: list[str]) -> None:
        """A worker could not start: stop snakeway (restarting it would fail again), and say why once, last."""
        self.why_failed = why or [f"snakeway: cannot start: worker {number} could not start"]
        self.failed = True
        for slot in self.slots:  # nothing to drain in a worker that is not serving yet, and nothing to say
            if slot.pid is not None and not self.handoff.has_started(slot.pid):
                _kill(slot.pid, signal.SIGKILL)
        self._stop_all()

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

    def _fork(self, number: int, previous_mask: set[int | signal.Signals]) -> None:
        self._adopt_newest()
        slot = self.slots[number]
        slot.restart_at = None
        slot.started = time.monotonic()
        slot.forked_at = time.monotonic_ns()
        slot.config_stamp = self.config_stamp
        config = self.config
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            slot.pid = pid
            return
        code = 1
        try:
            # SIGCHLD as before; the others stay blocked until the worker's handlers are in place.
            signal.pthread_sigmask(signal.SIG_SETMASK, set(previous_mask) | WORKER_SIGNALS)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            self.ws_counts.join(number)
            logs.in_worker(number)
            code = self.run_worker(config, WorkerEnv(self.handoff, self.ws_counts, number, self.private.path))
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

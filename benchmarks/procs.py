"""Processes the harness starts, and how it is sure to stop every one of them.

Every child runs in a session of its own (``start_new_session``), so a Ctrl-C in
the terminal reaches only the harness, which then stops its children in order;
its process group id is its pid, so :meth:`Proc.stop` signals exactly the tree
it started (nginx's workers included) and nothing else. As a last resort, a
child gets SIGTERM from the kernel if the harness dies without cleaning up
(``PR_SET_PDEATHSIG``), and an ``atexit`` hook stops whatever is still running.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from benchmarks import cpu

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
_running: list[Proc] = []


def free_port(kind: str = "tcp") -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Proc:
    """A started process tree (its own session), its log file and how to stop it."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        try:
            self.popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True, preexec_fn=_die_with_parent,
            )
        except BaseException:
            self._log.close()
            raise
        self.pid = self.popen.pid
        _running.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, limit: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError as exc:
            return f"(no log: {exc})"

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``timeout``; reap. Idempotent."""
        if self in _running:
            _running.remove(self)
        if self.popen.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        # Leftover members of the group (a worker whose master died) go too.
        deadline = time.monotonic() + 3
        while _group_exists(self.pid) and time.monotonic() < deadline:
            _signal_group(self.pid, signal.SIGKILL)
            time.sleep(0.05)
        self._log.close()

    def wait_port(self, port: int, timeout: float) -> None:
        """Until 127.0.0.1:``port`` accepts; RuntimeError (with the log) if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with status {self.popen.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection((LOOPBACK, port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not listen on port {port} within {timeout:.0f} s: {self.log_tail()}")

    def session_pids(self) -> list[int]:
        """Every live process of this tree (same session id as the leader)."""
        return [stat.pid for stat in cpu.stats() if stat.session == self.pid]

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) the whole tree has used so far, reaped children included."""
        return cpu.session_cpu_seconds(self.pid)

    def memory_mib(self) -> tuple[float, float]:
        """(RSS, PSS) of the whole tree in MiB; PSS does not count shared pages twice."""
        rss = pss = 0
        for pid in self.session_pids():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            except OSError:
                continue
        return rss / 1024, pss / 1024


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_all() -> None:
    """Stop every process still running, newest first."""
    for proc in reversed(list(_running)):
        try:
            proc.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            print(f"could not stop {proc.name} (pid {proc.pid}): {exc}")


class Group:
    """``with Group() as g: g.start(...)``: what was started in the block is stopped when it ends."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], log_path: Path, **kwargs: object) -> Proc:
        proc = Proc(name, argv, log_path, **kwargs)  # type: ignore[arg-type]
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def _as_ctrl_c(signum: int, frame: object) -> None:
    # Re-sent as SIGINT so that whoever handles Ctrl-C right now handles it: Python's default
    # handler, or trio's inside trio.run (which delivers KeyboardInterrupt to the main task cleanly).
    os.kill(os.getpid(), signal.SIGINT)


def install_handlers() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every ``finally`` stops its processes."""
    signal.signal(signal.SIGTERM, _as_ctrl_c)
    signal.signal(signal.SIGHUP, _as_ctrl_c)
    atexit.register(stop_all)

"""A real ``redis-server`` as a test fixture.

:func:`run_redis` starts ``redis-server`` on a free 127.0.0.1 port with its own
directory and no persistence, waits until it answers ``PING``, and stops it at
exit, whatever happened in between.

If ``redis-server`` is not installed the fixture fails (never skips): these
tests are the only proof that the Redis store works against a real server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from tests.pebble import LOOPBACK, free_port

STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_INSTALL_HINT = "apt-get install -y redis-server (Debian package, provides /usr/bin/redis-server)"


@dataclass
class RedisServer:
    """A running ``redis-server``.

    Attributes:
        port: Its port on 127.0.0.1.
        workdir: Its ``--dir`` (and log file).
        process: The server process.
    """

    port: int
    workdir: Path
    process: trio.Process

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def raw(self, *command: str) -> bytes:
        """One command over a plain socket, its reply's raw RESP bytes (blocking; for tests that look inside)."""
        return _command(self.port, command)

    async def start(self) -> None:
        """Start the server again (after :meth:`stop`) on the same port, empty: a restart without persistence."""
        assert self.process.returncode is not None, "redis-server is still running"
        self.process = await _start(self.port, self.workdir)

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it."""
        if self.process.returncode is not None:
            return
        self.process.terminate()
        with trio.move_on_after(STOP_TIMEOUT):
            await self.process.wait()
            return
        self.process.kill()
        await self.process.wait()


def _command(port: int, command: tuple[str, ...]) -> bytes:
    request = f"*{len(command)}\r\n".encode() + b"".join(
        f"${len(part.encode())}\r\n".encode() + part.encode() + b"\r\n" for part in command
    )
    with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
        sock.sendall(request)
        chunks = []
        sock.settimeout(0.2)
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


async def _start(port: int, workdir: Path) -> trio.Process:
    """``redis-server`` on ``port`` with ``workdir`` as its directory, once it answers ``PING``."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(f"redis-server is not installed: {_INSTALL_HINT}")
    log = workdir / "redis.log"
    argv = [binary, "--port", str(port), "--bind", LOOPBACK, "--dir", str(workdir), "--save", "",
            "--appendonly", "no", "--logfile", str(log)]
    process = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL)
    try:
        with trio.fail_after(STARTUP_TIMEOUT):
            while not await trio.to_thread.run_sync(_answers, port):
                if process.returncode is not None or process.poll() is not None:
                    details = log.read_text() if log.exists() else ""
                    pytest.fail(f"redis-server exited at start ({process.returncode}):\n{details}")
                await trio.sleep(0.02)
    except BaseException:
        with trio.CancelScope(shield=True):
            await RedisServer(port, workdir, process).stop()
        raise
    return process


@asynccontextmanager
async def run_redis(workdir: Path) -> AsyncIterator[RedisServer]:
    """A ``redis-server`` on a free loopback port with ``workdir`` as its directory; stopped at exit."""
    port = free_port()
    server = RedisServer(port, workdir, await _start(port, workdir))
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await server.stop()

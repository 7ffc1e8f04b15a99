"""snakeway as a real process, for tests that need signals and real clients."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio

PYTHON = sys.executable


class Running:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log = bytearray()

    async def wait_for(self, *texts: bytes, timeout: float = 10) -> bytes:
        """Read the log until one of ``texts`` appears; returns the one found."""
        assert self.process.stderr is not None
        with trio.move_on_after(timeout):
            while True:
                for text in texts:
                    if text in self.log:
                        return text
                chunk = await self.process.stderr.receive_some(65536)
                assert chunk, f"process exited; log:\n{self.log.decode()}"
                self.log += chunk
        raise AssertionError(f"none of {texts!r} logged within {timeout}s; log:\n{self.log.decode()[-4000:]}")

    async def read_more(self) -> None:
        """Wait for the next chunk of log."""
        assert self.process.stderr is not None
        chunk = await self.process.stderr.receive_some(65536)
        assert chunk, f"process exited; log:\n{self.log.decode()}"
        self.log += chunk

    async def drain_log(self) -> None:
        assert self.process.stderr is not None
        with trio.move_on_after(5):
            while chunk := await self.process.stderr.receive_some(65536):
                self.log += chunk


def _set_limits(nofile: int | None, fsize: int | None) -> None:  # runs in the child between fork and exec
    if nofile is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    if fsize is not None:  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))


async def spawn(config: Path, *, nofile: int | None = None, fsize: int | None = None) -> Running:
    """``snakeway serve`` on ``config``, its stderr captured; the caller stops it.

    ``nofile``: the process's RLIMIT_NOFILE (how many descriptors it may hold open).
    ``fsize``: its soft RLIMIT_FSIZE, the largest file it may write in bytes (the hard limit stays
    unlimited, so ``resource.prlimit`` can lift it later).
    """
    process = await trio.lowlevel.open_process(
        [PYTHON, "-m", "snakeway", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=None if nofile is None and fsize is None else partial(_set_limits, nofile, fsize),
    )
    return Running(process)


@asynccontextmanager
async def snakeway(
    config: Path, ready: bytes | None = b"listening on ", *, nofile: int | None = None, fsize: int | None = None
) -> AsyncIterator[Running]:
    """Run snakeway until the block ends (killing it then if still running); wait for ``ready`` first."""
    running = await spawn(config, nofile=nofile, fsize=fsize)
    process = running.process
    try:
        if ready is not None:
            await running.wait_for(ready)
        yield running
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()



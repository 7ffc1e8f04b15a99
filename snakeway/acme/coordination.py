"""Coordination between processes that share one certificate store.

Every process using a filesystem store runs a CertManager over it and may
share it with others: the workers of one server, and separate snakeway
processes on one host or on several machines mounting the same directories.
Three things keep them in step:

* **one order per certificate**: issuance happens under :meth:`lock`, an
  exclusive, non-blocking lock per certificate name. A worker that does not
  get it leaves the order to the one that did. The filesystem lock is
  ``flock(2)``, which the kernel releases when its holder dies, so a crashed
  worker never leaves a certificate locked;
* **a new certificate reaches every worker**: :meth:`stamps` are cheap
  version marks of stored certificates, which each worker compares when
  :meth:`generation` (one ``stat`` of the store, polled every few
  milliseconds) changes, and at least every ``watch_interval``; it loads the
  certificates whose stamp changed. Between two looks the watch waits in
  :meth:`wait_changed`: a coordinator that is told of changes (Redis pub/sub,
  kept up by :meth:`follow_changes`) ends that wait early; the filesystem
  ones just sleep;
* **any worker answers a challenge**: the CA's validation connection may
  land on any worker, so key authorizations are shared through
  :meth:`put_challenge` / :meth:`get_challenge`.

:class:`LocalCoordinator` does the same within one process (the memory
store). :class:`~snakeway.acme.rediscoord.RedisCoordinator` implements the
same protocol for several machines sharing one Redis store.

Fences
------
A lock whose holder can lose it without dying (a lease that expires while its
holder is paused) comes with a :class:`Fence`: the lock's name and a fencing
token that only grows from one holder to the next. The rule: **every store write
made while a lock is held presents that lock's token**, the innermost lock's
when locks nest (the rate-limit ledger, written under the budget lock inside a
certificate's lock, presents the budget lock's token). The coordinator puts the
fence in a context variable for its block (:func:`fenced`,
:func:`current_fence`), so a store finds it there without every caller passing
it along; a store that can check it refuses a write whose token is older than
the newest one issued, raising :class:`~snakeway.acme.store.FencedOut`. A lost
lock is raised as :class:`LockLost`, which carries its fence: a write made under
it afterwards (``with fenced(lost.fence): ...``) goes through only if nobody has
taken the lock over since.

:class:`LocalCoordinator` and :class:`FileCoordinator` set no fence: a
``flock(2)`` holder that pauses keeps its lock (the kernel releases it only
when the holder dies), so nobody takes over meanwhile and there is nothing to
fence.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from snakeway.acme.store import StoreError, name_to_path_part
from snakeway.files import write_atomic

LOCK_DIR = "locks"
# How often a store watch looks at a cheap generation mark (one stat of a local or shared directory).
GENERATION_POLL_SECONDS = 0.05
CHALLENGE_DIR = "challenges"


@dataclass(frozen=True)
class Fence:
    """The lock ``name`` held with fencing ``token``: what a write made under it presents."""

    name: str
    token: int


# The innermost fence of the running task (None: no fenced lock held). Trio tasks start with a copy of their
# parent's context, so a task started inside a lock's block writes under its fence too.
_fence: ContextVar[Fence | None] = ContextVar("snakeway_fence", default=None)


def current_fence() -> Fence | None:
    """The fence every store write of the running task presents now (see "Fences" above)."""
    return _fence.get()


@contextlib.contextmanager
def fenced(fence: Fence | None) -> Iterator[None]:
    """Make ``fence`` the running task's fence for the block (None: no fence), and the previous one after it."""
    reset = _fence.set(fence)
    try:
        yield
    finally:
        _fence.reset(reset)


class LockLost(StoreError):
    """A lock was lost while its block ran (its block was cancelled: the work under it is abandoned).

    Attributes:
        fence: The lost lock's fence: writes under it are refused once another process has taken the lock.
    """

    def __init__(self, message: str, fence: Fence) -> None:
        super().__init__(message)
        self.fence = fence


class Coordinator(Protocol):
    # How often the store watch asks for :meth:`generation` (seconds): what one look costs decides it.
    poll_seconds: float

    # Exclusive and non-blocking: True for the holder, False for everyone else. A lock that can be lost while
    # its holder lives runs its block under its Fence and raises LockLost at exit once lost (see "Fences").
    def lock(self, name: str) -> contextlib.AbstractAsyncContextManager[bool]: ...
    # Run by the store watch in its nursery for as long as it watches: keeps up whatever tells this coordinator
    # of changes (a Redis subscription); returns at once when there is nothing to keep up.
    async def follow_changes(self) -> None: ...
    # Wait up to ``seconds`` between two looks; True, and early, when told of a change meanwhile.
    async def wait_changed(self, seconds: float) -> bool: ...
    async def stamps(self, names: Iterable[str]) -> dict[str, str | None]: ...
    async def generation(self) -> object: ...
    async def put_challenge(self, key: str, value: str) -> None: ...
    async def get_challenge(self, key: str) -> str | None: ...
    async def delete_challenge(self, key: str) -> None: ...


class LocalCoordinator:
    """Coordination inside one process."""

    poll_seconds = GENERATION_POLL_SECONDS

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._challenges: dict[str, str] = {}

    async def follow_changes(self) -> None:
        """Nothing to follow: nobody announces changes here (the watch looks every ``poll_seconds``)."""
        await trio.lowlevel.checkpoint()

    async def wait_changed(self, seconds: float) -> bool:
        """Sleep ``seconds``; never told of a change, so False."""
        return await sleep_between_looks(seconds)

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[bool]:
        await trio.lowlevel.checkpoint()
        if name in self._held:
            yield False
            return
        self._held.add(name)
        try:
            yield True
        finally:
            self._held.discard(name)

    async def stamps(self, names: Iterable[str]) -> dict[str, str | None]:
        await trio.lowlevel.checkpoint()
        return dict.fromkeys(names)  # one process: the manager publishes directly

    async def generation(self) -> object:
        await trio.lowlevel.checkpoint()
        return None

    async def put_challenge(self, key: str, value: str) -> None:
        await trio.lowlevel.checkpoint()
        self._challenges[key] = value

    async def get_challenge(self, key: str) -> str | None:
        await trio.lowlevel.checkpoint()
        return self._challenges.get(key)

    async def delete_challenge(self, key: str) -> None:
        await trio.lowlevel.checkpoint()
        self._challenges.pop(key, None)


class FileCoordinator:
    """Coordination between processes through the filesystem store's directories.

    Args:
      cert_dir: the FileStore's certificate directory (each name is a symlink
        to its current version, so the link target is a version stamp).
      data_dir: where lock files and shared challenges live.
    """

    poll_seconds = GENERATION_POLL_SECONDS  # one stat

    def __init__(self, cert_dir: Path, data_dir: Path) -> None:
        self._cert_dir = cert_dir
        self._locks = data_dir / LOCK_DIR
        self._challenges = data_dir / CHALLENGE_DIR

    async def follow_changes(self) -> None:
        """Nothing to follow: a ``stat`` every ``poll_seconds`` is how changes are seen."""
        await trio.lowlevel.checkpoint()

    async def wait_changed(self, seconds: float) -> bool:
        """Sleep ``seconds``; never told of a change, so False."""
        return await sleep_between_looks(seconds)

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[bool]:
        path = self._locks / f"{name_to_path_part(name)}.lock"
        fd = await trio.to_thread.run_sync(_try_lock, path)
        if fd is None:
            yield False
            return
        try:
            yield True
        finally:
            os.close(fd)  # releases the flock

    async def stamps(self, names: Iterable[str]) -> dict[str, str | None]:
        names = list(names)
        return await trio.to_thread.run_sync(lambda: {n: self._stamp(n) for n in names})

    async def generation(self) -> object:
        """Changes whenever an entry of the certificate directory is added, replaced or removed.

        One ``stat`` of the directory: cheap enough to poll every few milliseconds, where :meth:`stamps` reads one
        link per certificate. Timestamps are coarse (a clock tick), so a change right after a poll can go unseen
        until the next one: callers also compare :meth:`stamps` now and then.
        """
        try:
            info = await trio.to_thread.run_sync(os.stat, self._cert_dir)
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_ctime_ns)

    def _stamp(self, name: str) -> str | None:
        try:
            return os.readlink(self._cert_dir / name_to_path_part(name))
        except OSError:
            return None

    async def put_challenge(self, key: str, value: str) -> None:
        await trio.to_thread.run_sync(write_atomic, self._challenge_path(key), value.encode(), 0o600)

    async def get_challenge(self, key: str) -> str | None:
        path = self._challenge_path(key)

        def read() -> str | None:
            try:
                return path.read_text()
            except OSError:
                return None

        return await trio.to_thread.run_sync(read)

    async def delete_challenge(self, key: str) -> None:
        await trio.to_thread.run_sync(lambda: self._challenge_path(key).unlink(missing_ok=True))

    def _challenge_path(self, key: str) -> Path:
        return self._challenges / hashlib.sha256(key.encode()).hexdigest()


async def sleep_between_looks(seconds: float) -> bool:
    """:meth:`Coordinator.wait_changed` of a coordinator that is never told of changes: sleep, then False."""
    await trio.sleep(seconds)
    return False


def _try_lock(path: Path) -> int | None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
